"""The code version: pyproject.toml's, recorded in every checkpoint as `code_version`."""

__version__ = "0.1.0"
