"""Fixtures of the benchmark tests (defined in tests/benchmark_fakes.py with their helpers)."""

from benchmark_fakes import fake_stages  # noqa: F401
