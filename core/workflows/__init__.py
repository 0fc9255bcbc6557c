"""Workflows: one module per thing a user asks for (train, evaluate, predict, screen, tune-oii, demo, ...)."""
