"""Benchmarks: `python -m bench.run` (or `make bench`); see docs/benchmarks.md."""
