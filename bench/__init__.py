"""Benchmarks: run `python -m bench` (see README, "Performance")."""
