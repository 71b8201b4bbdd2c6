"""Versions, in a module that imports nothing (read by ``pyproject.toml`` and the manifest)."""

__version__ = "0.1.0"
"""phiv's version."""

SCHEMA_VERSION = "1.0"
"""Version of the record format. Bumped on any change a reader must know about."""
