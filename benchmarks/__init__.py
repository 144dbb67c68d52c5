"""Benchmarks a user can run; results go to docs/benchmarks.md."""
