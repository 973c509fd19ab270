"""pypiserver: a private Python package index."""

__version__ = "3.0.0.dev0"
