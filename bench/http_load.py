"""Load: 2 000 tool calls over streamable HTTP from 50 concurrent MCP clients.

A real `piper-mcp serve --local --transport streamable-http`; each client is
the MCP SDK's own, with its own session. Counts protocol errors and lost
responses; reports throughput and p50/p99 latency.

    python -m bench.http_load [--clients 50] [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from piper_mcp.local.vault import Vault


async def drive(url: str, clients: int, calls: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    per_client = calls // clients

    async def one_client() -> None:
        async with Client(url, mode="legacy") as client:
            for n in range(per_client):
                tool = (
                    ("get_secret", {"variable": "bench_key"})
                    if n % 2 == 0
                    else ("list_variables", {})
                )
                started = time.perf_counter()
                try:
                    result = await client.call_tool(*tool)
                except Exception as error:  # a protocol error or a lost response
                    failures.append(type(error).__name__)
                    continue
                latencies.append(time.perf_counter() - started)
                if result.is_error:
                    failures.append("isError")

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(clients):
            group.start_soon(one_client)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls": per_client * clients,
        "answered": len(latencies),
        "errors": len(failures),
        "calls_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
    }


@contextmanager
def serving_http(folder: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`piper-mcp serve --local --transport streamable-http` on a free port: (URL, pid)."""
    log = folder / "serve.log"
    with log.open("wb") as stderr:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piper_mcp",
                "serve",
                "--local",
                "--transport",
                "streamable-http",
                "--port",
                "0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        for _ in range(600):
            found = re.search(r"serving MCP at (\S+)", log.read_text(errors="replace"))
            if found:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(log.read_text())
        yield found.group(1), serve.pid
    finally:
        serve.terminate()
        serve.wait(timeout=20)


def bench_vault(folder: Path) -> dict[str, str]:
    """A vault where `local-agent` is granted `bench_key`; the environment that serves it."""
    home = folder / "vault"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("bench secret", "x" * 40, owner_user_id=me)
    vault.grant(me, "local-agent", "bench_key", "bench secret")
    vault.close()
    return {
        "PIPER_HOME": str(home),
        "PIPER_MCP_LOG_LEVEL": "WARNING",
        "PIPER_MCP_AUDIT_FILE": str(folder / "audit.jsonl"),
    }


def run(clients: int = 50, calls: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as name:
        folder = Path(name)
        with serving_http(folder, {**os.environ, **bench_vault(folder)}) as (url, _):
            return anyio.run(drive, url, clients, calls)


def table(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| tool calls | answered | errors | calls/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            f"| {results['calls']} | {results['answered']} | {results['errors']} | "
            f"{results['calls_per_second']} | {results['p50_ms']} | {results['p99_ms']} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(table(run(args.clients, args.calls)))


if __name__ == "__main__":
    main()
