"""Runs: run directories, their metrics and reports, and comparison tables."""
