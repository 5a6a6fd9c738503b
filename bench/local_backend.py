"""Throughput and latency of `piper-mcp local serve`: resolve + scoped pairs (protocol v2).

A real serve process on loopback, a vault on disk, and 1 or 16 concurrent
keep-alive clients in this process (a minimal HTTP/1.1 client: see
`KeepAliveConnection`). Each setting runs `--rounds` times,
alternating, and reports medians.

    python -m bench.local_backend [--pairs 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from piper_mcp.local.vault import Vault

RESULTS = Path(__file__).parent / "results"
VARIABLES = [f"variable_{n}" for n in range(5)]


def make_vault(home: Path) -> str:
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.add_agent("bench-agent", None, owner_user_id=me, variables=VARIABLES, secretless=True)
    for variable in VARIABLES:
        vault.put_secret(f"secret {variable}", "x" * 40, owner_user_id=me)
        vault.grant(me, "bench-agent", variable, f"secret {variable}")
    instance = vault.local_instance_id
    vault.close()
    return instance


class KeepAliveConnection:
    """A minimal HTTP/1.1 client on one kept-alive connection.

    httpx costs more CPU per request than the server does; on a 2-core machine
    it would measure itself. This sends pre-encoded requests and reads
    Content-Length bodies, nothing more.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        answer = json.loads(await self.reader.readexactly(length))
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r} {answer}")
        result: dict[str, Any] = answer
        return result

    def close(self) -> None:
        self.writer.close()


async def pairs(base: str, instance: str, count: int, concurrency: int) -> dict[str, float]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    identity = {"agentClientId": "bench-agent", "instanceId": instance}

    async def worker(start: int) -> None:
        connection = KeepAliveConnection(host, int(port))
        await connection.open()
        for n in range(start, count, concurrency):
            started = time.perf_counter()
            resolved = await connection.post(
                "/piper-resolve-variable-mapping",
                {**identity, "variableName": VARIABLES[n % len(VARIABLES)]},
            )
            await connection.post(
                "/getscopedgcpcredentials",
                {**identity, "credentialIds": [resolved["credentialId"]]},
            )
            latencies.append(time.perf_counter() - started)
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "pairs_per_second": count / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def run(pair_count: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        home = Path(folder) / "vault"
        instance = make_vault(home)
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piper_mcp",
                "local",
                "serve",
                "--port",
                "0",
                "--link-port",
                "0",
                "--json",
            ],
            env={**os.environ, "PIPER_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert serve.stdout is not None
            base = json.loads(serve.stdout.readline())["url"]
            samples: dict[int, list[dict[str, float]]] = {1: [], 16: []}
            for _ in range(rounds):
                for concurrency in samples:  # alternating settings, round after round
                    samples[concurrency].append(
                        asyncio.run(pairs(base, instance, pair_count, concurrency))
                    )
        finally:
            serve.terminate()
            serve.wait(timeout=20)
    return {
        str(concurrency): {
            key: round(statistics.median(s[key] for s in runs), 2) for key in runs[0]
        }
        for concurrency, runs in samples.items()
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| concurrent clients | resolve+scoped pairs/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for concurrency, figures in results.items():
        lines.append(
            f"| {concurrency} | {figures['pairs_per_second']:.0f} | "
            f"{figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400, help="pairs per run (400)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting (3)")
    args = parser.parse_args()
    results = run(args.pairs, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "local_backend.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "local_backend.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
