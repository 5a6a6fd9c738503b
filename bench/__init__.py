"""Benchmarks: run `python -m bench` (see README, "Performance")."""

# The benchmark agent's client secret (protocol v1); 32 characters or more, as required.
BENCH_SECRET = "bench-agent-client-secret-6f1d0c9a2b"
