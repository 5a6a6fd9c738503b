"""Starting piper-mcp's own servers as subprocesses, as a person or a host would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def initialize(client: str, request_id: int = 0) -> dict[str, object]:
    """A handshake-era `initialize` request, as a raw JSON-RPC client sends it."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }


def piper_mcp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`piper-mcp ARGS` run to its end as a person runs it: what it printed, whatever its exit."""
    return subprocess.run(
        [sys.executable, "-m", "piper_mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def serve_local_over_stdio(
    env: dict[str, str],
    messages: Iterable[dict[str, object]] = (),
    *,
    stderr: int = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """`piper-mcp serve --local` as a host starts it (pipes), `messages` already on its stdin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", "serve", "--local"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write("".join(json.dumps(message) + "\n" for message in messages))
    process.stdin.flush()
    return process


@contextmanager
def mcp_http_servers(env: dict[str, str], *, local: bool = True) -> Iterator[Callable[..., str]]:
    """`start(transport, *flags, more_env=None)` runs `piper-mcp serve` over HTTP on a free
    port: its URL.

    stderr goes to a file (never a pipe nobody reads, which could block the server);
    `start.logs[url]` is its path, `start.processes[url]` the process (to signal it).
    Every server is terminated when the block ends.
    """
    started: list[subprocess.Popen[bytes]] = []
    logs: dict[str, Path] = {}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    folder = Path(tempfile.mkdtemp(prefix="piper-mcp-serve-"))

    def start(transport: str, *flags: str, more_env: dict[str, str] | None = None) -> str:
        log = folder / f"stderr-{len(started)}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "piper_mcp",
                    "serve",
                    *(["--local"] if local else []),
                    "--transport",
                    transport,
                    "--port",
                    "0",
                    *flags,
                ],
                env={**env, **(more_env or {})},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"serving MCP at (\S+)", log.read_text(errors="replace"))
            if found:
                logs[found.group(1)] = log
                processes[found.group(1)] = process
                return found.group(1)
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"serve did not start:\n{log.read_text(errors='replace')}")

    start.logs = logs  # type: ignore[attr-defined]
    start.processes = processes  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=20)


# A bearer token for servers the tests start with PIPER_MCP_HTTP_TOKEN.
HTTP_TOKEN = "http-token-for-tests-7c1d-4b9e0a62f35d81c2"


def with_token(url: str, token: str = HTTP_TOKEN) -> Any:
    """The streamable-HTTP transport for `Client(...)` that sends `token` as its bearer."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"})
    return streamable_http_client(url, http_client=http)
