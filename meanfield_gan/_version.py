"""The package version (one place; read by the package, its files and its docs)."""
__version__ = "0.1.0"
