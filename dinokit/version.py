"""The package version, apart from __init__ so that low modules can read it without importing the API."""

__version__ = "0.1.0"
