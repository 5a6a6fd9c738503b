"""Benchmarks: run `python -m bench` (see README, "Performance").

Importing this package first compiles piper-mcp's sources to bytecode, as installing
a wheel does: an editable install has none, and where PYTHONDONTWRITEBYTECODE is set
(as on the build machine) every start would compile piper-mcp from source and measure
that instead.
"""

import compileall
from pathlib import Path

# The benchmark agent's client secret (protocol v1); 32 characters or more, as required.
BENCH_SECRET = "bench-agent-client-secret-6f1d0c9a2b"

compileall.compile_dir(Path(__file__).parents[1] / "src" / "piper_mcp", quiet=1)
