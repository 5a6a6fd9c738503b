"""piper-mcp over stdio against the bare MCPServer floor, side by side (A B A B, medians).

- cold start: process start to the `initialize` reply;
- idle memory: RSS once initialized;
- a warm call: `get_secret` served within the revocation window vs the bare
  server's trivial tool, round trip over the same stdio pipe.

    python -m bench.stdio_server [--rounds 7] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault

HERE = Path(__file__).parent
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}


class StdioPeer:
    """A minimal line-delimited JSON-RPC client on a server's stdin/stdout."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.next_id = 1

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        while True:
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
            if answer.get("id") == message.get("id"):
                return answer

    def initialize(self) -> float:
        self.request(INITIALIZE)
        elapsed = time.perf_counter() - self.started
        assert self.process.stdin is not None
        self.process.stdin.write(
            json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"
        )
        return elapsed

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return self.request(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        )

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=20)


def run(rounds: int, calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        vault, _ = Vault.init(Path(folder) / "vault")
        me = vault.local_user_id
        vault.put_secret("bench secret", "x" * 40, owner_user_id=me)
        vault.grant(me, "local-agent", "bench_key", "bench secret")
        vault.set_secretless("local-agent", True)  # served over loopback here, so v2
        with LocalBackend(vault, instance_id=vault.local_instance_id) as piper:
            env = {
                **os.environ,
                **piper.environment(),
                "PIPER_CLIENT_ID": "local-agent",
                "PIPER_VARIABLES": "bench_key",
                "PIPER_MCP_LOG_LEVEL": "WARNING",
                "PIPER_MCP_AUDIT_FILE": str(Path(folder) / "audit.jsonl"),
            }
            commands = {
                "piper-mcp": [sys.executable, "-m", "piper_mcp", "serve"],
                "bare MCPServer": [sys.executable, str(HERE / "bare_server.py")],
            }
            calls_for = {
                "piper-mcp": ("get_secret", {"variable": "bench_key"}),
                "bare MCPServer": ("echo", {"text": "hi"}),
            }
            samples: dict[str, dict[str, list[float]]] = {
                name: {"cold_start_ms": [], "rss_mib": [], "call_ms": []} for name in commands
            }
            for _ in range(rounds):
                for name, command in commands.items():  # A B A B
                    peer = StdioPeer(command, env)
                    samples[name]["cold_start_ms"].append(1000 * peer.initialize())
                    tool, arguments = calls_for[name]
                    first = peer.call(tool, arguments)
                    assert not first["result"].get("isError"), first
                    time.sleep(0.2)
                    samples[name]["rss_mib"].append(peer.rss_kib() / 1024)
                    started = time.perf_counter()
                    for _ in range(calls):
                        peer.call(tool, arguments)
                    samples[name]["call_ms"].append(1000 * (time.perf_counter() - started) / calls)
                    peer.close()
    medians = {
        name: {metric: round(statistics.median(values), 2) for metric, values in metrics.items()}
        for name, metrics in samples.items()
    }
    ours, floor = medians["piper-mcp"], medians["bare MCPServer"]
    medians["ratio"] = {metric: round(ours[metric] / floor[metric], 2) for metric in ours}
    return medians


def table(results: dict[str, Any]) -> str:
    ours, floor, ratio = results["piper-mcp"], results["bare MCPServer"], results["ratio"]
    rows = [
        ("cold start to `initialize` reply (ms)", "cold_start_ms", "1.15"),
        ("idle RSS (MiB)", "rss_mib", "1.2"),
        ("warm call round trip over stdio (ms)", "call_ms", "1.3"),
    ]
    lines = ["| measure | piper-mcp | bare MCPServer | ratio | target |", "|---|---|---|---|---|"]
    for label, key, target in rows:
        lines.append(f"| {label} | {ours[key]} | {floor[key]} | {ratio[key]}x | ≤ {target}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(table(run(args.rounds, args.calls)))


if __name__ == "__main__":
    main()
