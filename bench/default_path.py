"""The commands README gives, against a bare MCPServer on the same transport (A B A B, medians).

Each server is started as a host starts it: the `piper-mcp` console script next to this
Python, stdin a pipe, an environment of PATH, HOME and PIPER_HOME only (plus the Piper
settings README lists for `serve` without `--local`). The floor is bench/bare_server.py,
a bare `MCPServer` with one trivial tool, over the same transport. Measured:

- cold start: process start to the `initialize` reply (over HTTP: the URL on stderr, then
  the `initialize` POST);
- idle RSS: once the first call is answered;
- a warm call: `get_secret` served within the revocation window vs the bare server's
  trivial tool, the mean round trip over the same pipe or keep-alive connection.

    python -m bench.default_path            # every command, stdio and streamable HTTP
    python -m bench.default_path --quick    # `serve --local` only, fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from piper_mcp.local.vault import Vault

HERE = Path(__file__).parent
PROTOCOL_VERSION = "2025-06-18"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
SERVING = re.compile(r"serving MCP at (\S+)")
GET_SECRET = ("get_secret", {"variable": "bench_key"})
ECHO = ("echo", {"text": "hi"})
BACKEND_AGENT = "bench-agent"
BACKEND_COMMAND = "piper-mcp local serve --port 0 --link-port 0 --json"
# Ratio targets: cold start, idle RSS, warm call.
LOCAL_TARGETS = {"cold_start_ms": 1.10, "rss_mib": 1.15, "call_ms": 1.15}
BACKEND_TARGETS = {"cold_start_ms": 1.15, "rss_mib": 1.2, "call_ms": 1.3}


def piper_mcp_script() -> str:
    """The console script a host runs: the one installed next to this Python."""
    found = shutil.which("piper-mcp", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("no piper-mcp next to this Python: `pip install -e .` first")
    return found


def minimal_environment(**settings: str) -> dict[str, str]:
    """What a host passes: PATH and HOME, and the server's own settings; nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), **settings}


class Peer:
    """A minimal MCP client of a server process it starts; `request` and `notify` per wire."""

    started: float
    process: subprocess.Popen[bytes]
    next_id = 0

    def _start(self, command: list[str], env: dict[str, str], *, stdout: int, stderr: int) -> None:
        """Start the server, the clock with it; stdin is a pipe, as hosts give it."""
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr
        )

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def notify(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def initialize(self) -> float:
        """The handshake; seconds from the process start to the `initialize` reply."""
        self.request(INITIALIZE)
        elapsed = time.perf_counter() - self.started
        self.notify(INITIALIZED)
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


class StdioPeer(Peer):
    """A minimal line-delimited JSON-RPC client on a server's stdin/stdout."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._start(command, env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.notify(message)
        assert self.process.stdout is not None
        while True:
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
            if answer.get("id") == message.get("id"):
                return answer

    def notify(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=20)


class HttpPeer(Peer):
    """A minimal streamable HTTP client: one session, one keep-alive connection."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._start(command, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = self._announced_url()
        self.http = httpx.Client(timeout=30)
        self.headers = {"accept": "application/json, text/event-stream"}

    def _announced_url(self) -> str:
        assert self.process.stderr is not None
        said = []
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            said.append(line)
            found = SERVING.search(line)
            if found:
                # Keep draining, so a chatty server never blocks on a full pipe.
                stderr = self.process.stderr
                threading.Thread(target=stderr.read, daemon=True).start()
                return found.group(1)
        raise RuntimeError("the server stopped before serving:\n" + "".join(said))

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(self.url, json=message, headers=self.headers)
        answer.raise_for_status()
        if "mcp-session-id" in answer.headers:
            self.headers["mcp-session-id"] = answer.headers["mcp-session-id"]
            self.headers["mcp-protocol-version"] = PROTOCOL_VERSION
        if answer.headers["content-type"].startswith("application/json"):
            body: dict[str, Any] = answer.json()
            return body
        for line in answer.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                event: dict[str, Any] = json.loads(line[5:])
                if event.get("id") == message.get("id"):
                    return event
        raise RuntimeError(f"no answer to {message.get('method')} in {answer.text[:200]!r}")

    def notify(self, message: dict[str, Any]) -> None:
        self.http.post(self.url, json=message, headers=self.headers).raise_for_status()

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=20)


@dataclass(frozen=True)
class Server:
    """One way of starting a server, the call it is timed on, and its command line as shown."""

    command: list[str]
    env: dict[str, str]
    http: bool
    tool: tuple[str, dict[str, str]]
    shown: str


def measure(server: Server, calls: int) -> dict[str, float]:
    peer = (HttpPeer if server.http else StdioPeer)(server.command, server.env)
    try:
        cold_start = peer.initialize()
        first = peer.call(*server.tool)
        if "error" in first or first["result"].get("isError"):
            raise RuntimeError(f"{server.shown}: the first call failed: {first}")
        time.sleep(0.2)
        rss = rss_kib(peer.process.pid) / 1024
        started = time.perf_counter()
        for _ in range(calls):
            peer.call(*server.tool)
        call_ms = 1000 * (time.perf_counter() - started) / calls
    finally:
        peer.close()
    return {"cold_start_ms": 1000 * cold_start, "rss_mib": rss, "call_ms": call_ms}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def compare(ours: Server, floor: Server, rounds: int, calls: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {"ours": {}, "floor": {}}
    for _ in range(rounds):
        for side, server in (("ours", ours), ("floor", floor)):  # A B A B
            for metric, value in measure(server, calls).items():
                samples[side].setdefault(metric, []).append(value)
    medians = {
        side: {metric: round(statistics.median(values), 2) for metric, values in metrics.items()}
        for side, metrics in samples.items()
    }
    medians["ratio"] = {
        metric: round(medians["ours"][metric] / medians["floor"][metric], 2)
        for metric in medians["ours"]
    }
    medians["commands"] = {"ours": ours.shown, "floor": floor.shown}
    return medians


def make_vault(home: Path) -> None:
    """A vault where `local-agent` (`serve --local`) and `bench-agent` (v2) have `bench_key`."""
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("bench secret", "x" * 40, owner_user_id=me)
    vault.grant(me, "local-agent", "bench_key", "bench secret")
    vault.add_agent(BACKEND_AGENT, None, owner_user_id=me, variables=["bench_key"], secretless=True)
    vault.grant(me, BACKEND_AGENT, "bench_key", "bench secret")
    vault.close()


@contextmanager
def local_backend(script: str, home: Path) -> Iterator[dict[str, str]]:
    """`piper-mcp local serve` on free ports: the PIPER_* settings it prints."""
    backend = subprocess.Popen(
        [script, *BACKEND_COMMAND.split()[1:]],
        env=minimal_environment(PIPER_HOME=str(home)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert backend.stdout is not None
        settings: dict[str, str] = json.loads(backend.stdout.readline())["env"]
        yield settings
    finally:
        backend.terminate()
        backend.wait(timeout=20)


def run(rounds: int = 7, calls: int = 300, *, quick: bool = False) -> dict[str, Any]:
    """Each comparison's medians, ratios and the command lines measured."""
    script = piper_mcp_script()
    bare = [sys.executable, str(HERE / "bare_server.py")]
    http = ["--transport", "streamable-http", "--port", "0"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        home = Path(folder) / "vault"
        make_vault(home)
        local_env = minimal_environment(PIPER_HOME=str(home))
        floor_env = minimal_environment()
        floors = {
            False: Server(bare, floor_env, False, ECHO, "python bench/bare_server.py"),
            True: Server(
                [*bare, "streamable-http"],
                floor_env,
                True,
                ECHO,
                "python bench/bare_server.py streamable-http",
            ),
        }
        for name, over_http in (("serve --local", False), ("serve --local, HTTP", True)):
            arguments = ["serve", "--local", *(http if over_http else [])]
            shown = f"PIPER_HOME=<vault> piper-mcp {' '.join(arguments)}"
            ours = Server([script, *arguments], local_env, over_http, GET_SECRET, shown)
            results[name] = compare(ours, floors[over_http], rounds, calls)
        if quick:
            return results
        with local_backend(script, home) as piper:
            backend_env = minimal_environment(
                PIPER_HOME=str(home),
                PIPER_CLIENT_ID=BACKEND_AGENT,
                PIPER_VARIABLES="bench_key",
                **piper,
            )
            for name, over_http in (("serve", False), ("serve, HTTP", True)):
                arguments = ["serve", *(http if over_http else [])]
                shown = (
                    f"PIPER_HOME=<vault> PIPER_CLIENT_ID={BACKEND_AGENT} PIPER_VARIABLES=bench_key "
                    f"<the PIPER_* URLs `{BACKEND_COMMAND}` prints> piper-mcp {' '.join(arguments)}"
                )
                ours = Server([script, *arguments], backend_env, over_http, GET_SECRET, shown)
                results[name] = compare(ours, floors[over_http], rounds, calls)
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        ("cold start to `initialize` reply (ms)", "cold_start_ms"),
        ("idle RSS (MiB)", "rss_mib"),
        ("warm call round trip (ms)", "call_ms"),
    ]
    lines = [
        "| command | transport | measure | piper-mcp | bare MCPServer | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, section in results.items():
        targets = LOCAL_TARGETS if name.startswith("serve --local") else BACKEND_TARGETS
        command = "`piper-mcp " + name.split(",")[0].removeprefix("piper-mcp ") + "`"
        transport = "streamable HTTP" if name.endswith("HTTP") else "stdio"
        for label, key in rows:
            ours, floor, ratio = (section[side][key] for side in ("ours", "floor", "ratio"))
            lines.append(
                f"| {command} | {transport} | {label} | {ours} | {floor} | {ratio}x | "
                f"≤ {targets[key]}x |"
            )
    lines += ["", "Command lines measured (each against the bare server on its transport):", ""]
    seen = set()
    for section in results.values():
        for shown in section["commands"].values():
            if shown not in seen:
                seen.add(shown)
                lines.append(f"    {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="alternating runs per comparison (7; quick 5)")
    parser.add_argument("--calls", type=int, help="warm calls per run (300; quick 200)")
    parser.add_argument(
        "--quick", action="store_true", help="only `serve --local` (stdio and HTTP)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 7)
    calls = args.calls or (200 if args.quick else 300)
    print(table(run(rounds, calls, quick=args.quick)))


if __name__ == "__main__":
    main()
