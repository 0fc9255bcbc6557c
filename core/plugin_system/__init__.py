"""The plugin system: kinds and hooks, finding plugins, the registry, parameters, configs and errors.

Everything else in defectlab is built on this layer; it imports nothing above it.
"""
