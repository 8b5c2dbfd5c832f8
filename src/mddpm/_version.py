"""The package version: one place, read by pyproject (setuptools dynamic version) and every module that records it."""

__version__ = "0.1.0"
