"""What `piper-mcp exec` adds to a wrapped MCP server's start (A B A B, medians).

The same small MCP server (tests/cli/env_report_server.py) started directly, and
started by `piper-mcp exec --local --env ...`, which resolves a granted variable from
a local vault, audits it, closes what it opened and becomes the server. Each is
started as a host starts it (stdin a pipe; PATH, HOME and PIPER_HOME only); measured
from the process start to the `initialize` reply over stdio. Each wrapped run then
checks, once timed, that the server got the value (its sha256, never the value).

    python -m bench.exec_startup              # 31 rounds (a start varies by tens of ms)
    python -m bench.exec_startup --rounds 51
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.default_path import (
    StdioPeer,
    make_vault,
    minimal_environment,
    piper_mcp_script,
)

SERVER = Path(__file__).parent.parent / "tests" / "cli" / "env_report_server.py"
INJECTED = "BENCH_KEY"
VALUE_SHA256 = hashlib.sha256(b"x" * 40).hexdigest()  # what make_vault stores for bench_key
TARGET = 1.10


def start_to_initialize(command: list[str], env: dict[str, str], *, wrapped: bool) -> float:
    """Milliseconds from spawning `command` to its `initialize` reply."""
    peer = StdioPeer(command, env)
    try:
        elapsed = peer.initialize()
        if wrapped:
            answer = peer.call("environment", {"digests_of": [INJECTED]})
            got = answer["result"]["structuredContent"]["sha256"].get(INJECTED)
            if got != VALUE_SHA256:
                raise RuntimeError(f"the wrapped server did not get {INJECTED}: {answer}")
    finally:
        peer.close()
    return 1000 * elapsed


def run(rounds: int = 31) -> dict[str, Any]:
    """Medians of both starts (ms), what exec adds (ms), their ratio, the commands."""
    server = [sys.executable, str(SERVER)]
    exec_arguments = ["exec", "--local", "--env", f"{INJECTED}=bench_key", "--"]
    samples: dict[str, list[float]] = {"exec": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        home = Path(folder) / "vault"
        make_vault(home)
        wrapped = [piper_mcp_script(), *exec_arguments, *server]
        local_env = minimal_environment(PIPER_HOME=str(home))
        for _ in range(rounds):  # A B A B
            samples["exec"].append(start_to_initialize(wrapped, local_env, wrapped=True))
            samples["direct"].append(
                start_to_initialize(server, minimal_environment(), wrapped=False)
            )
    ours, floor = (round(statistics.median(samples[side]), 1) for side in ("exec", "direct"))
    return {
        "exec_ms": ours,
        "direct_ms": floor,
        "added_ms": round(ours - floor, 1),
        "ratio": round(ours / floor, 2),
        "target": TARGET,
        "rounds": rounds,
        "commands": {
            "exec": "PIPER_HOME=<vault> piper-mcp "
            + " ".join(exec_arguments)
            + " python tests/cli/env_report_server.py",
            "direct": "python tests/cli/env_report_server.py",
        },
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| start to `initialize` reply (ms) | direct | through `piper-mcp exec` | added | "
        "ratio | target |",
        "|---|---|---|---|---|---|",
        f"| median of {results['rounds']} | {results['direct_ms']} | {results['exec_ms']} | "
        f"{results['added_ms']} | {results['ratio']}x | ≤ {results['target']}x |",
        "",
        "Command lines measured:",
        "",
        *(f"    {shown}" for shown in results["commands"].values()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31, help="alternating runs (31)")
    print(table(run(parser.parse_args().rounds)))


if __name__ == "__main__":
    main()
