"""`python -m bench`: every benchmark in one run.

Writes bench/results/RESULTS.md and results.json, and the tables in docs/performance.md
(between its `<!-- bench:begin -->` and `<!-- bench:end -->` markers, nothing else).
Comparisons are ratios measured side by side in the same run (A B A B, medians),
because this machine is shared and noisy.

    python -m bench            # everything (the soak takes a while)
    python -m bench --quick    # only `serve --local` against its floor; nothing written
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from bench import (
    brokered_call,
    dashboard,
    default_path,
    exec_startup,
    faults,
    http_load,
    local_backend,
    round_trips,
    sdk_compare,
    soak,
)

RESULTS = local_backend.RESULTS
PERFORMANCE_PAGE = Path(__file__).parent.parent / "docs" / "performance.md"
README = Path(__file__).parent.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only `serve --local` (stdio and streamable HTTP) against the bare server",
    )
    if parser.parse_args().quick:
        print(default_path.table(default_path.run(rounds=5, calls=200, quick=True)))
        return
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = {
        "default_path": default_path.run(rounds=7, calls=300),
        "exec_startup": exec_startup.run(rounds=31),
        "brokered_call": brokered_call.run(rounds=7, requests=100),
        "dashboard": dashboard.run(rounds=5, requests=50),
        "sdk_compare": sdk_compare.run(rounds=5),
        "local_backend": local_backend.run(pair_count=1000, rounds=3),
        "round_trips": round_trips.run(),
        "http_load": http_load.run(clients=50, calls=2000),
        "faults": faults.run(),
        "soak": soak.run(calls=40_000, sessions=20_000),
    }
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    tables = "\n\n".join(
        [
            f"Measured {started} on {machine}, by `python -m bench`.",
            "### The commands README gives vs a bare MCPServer with one trivial tool",
            default_path.table(sections["default_path"]),
            "### `piper-mcp exec`: a wrapped MCP server's start, direct and through exec",
            exec_startup.table(sections["exec_startup"]),
            "### A brokered call (`call_api`) vs calling the API directly",
            brokered_call.table(sections["brokered_call"]),
            "### The dashboard's pages vs a trivial page on the same kind of server",
            dashboard.table(sections["dashboard"]),
            "### The Piper client vs the published SDK",
            sdk_compare.table(sections["sdk_compare"]),
            "### The local backend: resolve + scoped pairs",
            local_backend.table(sections["local_backend"]),
            "### Piper round trips per get_secret (single-flight, no token reuse)",
            round_trips.table(sections["round_trips"]),
            "### Load: 2 000 tool calls over streamable HTTP from 50 MCP clients",
            http_load.table(sections["http_load"]),
            "### Faults injected between piper-mcp and Piper",
            faults.table(sections["faults"]),
            "### Soak: memory and descriptors under sustained use of `serve --local`",
            soak.table(sections["soak"]),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "RESULTS.md").write_text(f"# Benchmarks\n\n{tables}\n")
    (RESULTS / "results.json").write_text(json.dumps(sections, indent=2) + "\n")
    write_tables(PERFORMANCE_PAGE, tables)
    write_tables(README, summary(sections, started))
    print(tables)


def summary(sections: dict[str, Any], started: str) -> str:
    """README's few lines: the default path, exec, call_api and the soak against targets."""
    local = sections["default_path"]["serve --local"]
    ratios = " / ".join(
        f"{local['ratio'][key]}x" for key in ("cold_start_ms", "rss_mib", "call_ms")
    )
    targets = " / ".join(
        f"≤ {default_path.LOCAL_TARGETS[key]}x" for key in ("cold_start_ms", "rss_mib", "call_ms")
    )
    started_exec, brokered = sections["exec_startup"], sections["brokered_call"]
    calls, opened = (
        sections["soak"][key]["growth"]["last_quarter"] for key in ("calls", "sessions")
    )
    return "\n".join(
        [
            "| what (measured side by side in one run) | measured | target |",
            "|---|---|---|",
            "| `serve --local` over stdio vs a bare `MCPServer`: cold start to `initialize`, "
            f"idle RSS, warm `get_secret` | {ratios} | {targets} |",
            "| a Python MCP server started through `piper-mcp exec --local` vs directly | "
            f"{started_exec['ratio']}x (+{started_exec['added_ms']} ms) | "
            f"≤ {started_exec['target']}x |",
            "| a brokered HTTPS call (`call_api`'s engine) vs httpx with the key | "
            f"{brokered['ratio']}x | ≤ {brokered['target']}x |",
            "| RSS growth per 1 000 calls (token reuse off) / abandoned HTTP sessions, "
            f"steady state | {calls} / {opened} KiB | < 50 KiB |",
            "",
            f"Measured {started} by `python -m bench` on 2 cores; every table, the commands "
            "measured and the misses explained: [docs/performance.md](docs/performance.md).",
        ]
    )


def write_tables(page: Path, tables: str) -> None:
    """Put `tables` between the page's markers; the rest of the page is left as it is."""
    if not page.exists():
        page.parent.mkdir(exist_ok=True)
        page.write_text(f"# Performance\n\n{BEGIN}\n{END}\n")
    text = page.read_text()
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"{page} lacks the {BEGIN} … {END} markers the tables go between")
    page.write_text(f"{head}{BEGIN}\n{tables}\n{END}{tail}")


if __name__ == "__main__":
    main()
