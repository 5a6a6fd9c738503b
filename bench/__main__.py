"""`python -m bench`: every benchmark in one run; writes bench/results/RESULTS.md and results.json.

Comparisons are ratios measured side by side in the same run (A B A B,
medians), because this machine is shared and noisy.
"""

from __future__ import annotations

import json
import platform
import time

from bench import (
    faults,
    http_load,
    local_backend,
    round_trips,
    sdk_compare,
    soak,
    stdio_server,
)

RESULTS = local_backend.RESULTS


def main() -> None:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = {
        "stdio_server": stdio_server.run(rounds=7, calls=300),
        "sdk_compare": sdk_compare.run(rounds=5),
        "local_backend": local_backend.run(pair_count=1000, rounds=3),
        "round_trips": round_trips.run(),
        "http_load": http_load.run(clients=50, calls=2000),
        "faults": faults.run(),
        "soak": soak.run(calls=20_000, sessions=5_000),
    }
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    report = "\n\n".join(
        [
            f"# Benchmarks ({started}; {machine})",
            "## piper-mcp over stdio vs a bare MCPServer with one trivial tool",
            stdio_server.table(sections["stdio_server"]),
            "## The Piper client vs the published SDK",
            sdk_compare.table(sections["sdk_compare"]),
            "## The local backend: resolve + scoped pairs",
            local_backend.table(sections["local_backend"]),
            "## Piper round trips per get_secret (single-flight, no token reuse)",
            round_trips.table(sections["round_trips"]),
            "## Load: 2 000 tool calls over streamable HTTP from 50 MCP clients",
            http_load.table(sections["http_load"]),
            "## Faults injected between piper-mcp and Piper",
            faults.table(sections["faults"]),
            "## Soak: memory and descriptors under sustained use of `serve --local`",
            soak.table(sections["soak"]),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "RESULTS.md").write_text(report + "\n")
    (RESULTS / "results.json").write_text(json.dumps(sections, indent=2) + "\n")
    print(report)


if __name__ == "__main__":
    main()
