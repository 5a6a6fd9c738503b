"""Issue 10.9: SIGTERM over HTTP drains the calls in flight, refuses new ones, then exits.

A call is held in flight by a Piper Link that answers only when the test lets it: no
timing decides what happens, and every wait is bounded relative to the configured grace.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from tests.processes import mcp_http_servers

pytestmark = pytest.mark.anyio

MARGIN = 15.0  # seconds on top of the grace for a process to start and stop on a busy machine


@dataclass
class HeldLink:
    """A Piper Link whose answers wait until `release` is set."""

    url: str
    asked: threading.Event
    release: threading.Event


@pytest.fixture
def held_link() -> Iterator[HeldLink]:
    asked, release = threading.Event(), threading.Event()

    class Link(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.set()
            release.wait(60)
            body = json.dumps({"instanceId": "instance-held-1234"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Link)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield HeldLink(f"http://127.0.0.1:{server.server_port}/", asked, release)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(
    cli_env: dict[str, str], held_link: HeldLink
) -> Iterator[Callable[[str, float], Serving]]:
    """`serve(transport, grace)`: `piper-mcp serve` over HTTP, its Link the held one."""
    env = {**cli_env, "PIPER_LINK_URL": held_link.url, "PIPER_LINK_TIMEOUT": "60"}
    with mcp_http_servers(env, local=False) as start:

        def serving(transport: str, grace: float) -> Serving:
            grace_env = {"PIPER_MCP_SHUTDOWN_GRACE_SECONDS": str(grace)}
            url = start(transport, more_env=grace_env)
            return Serving(start.processes[url], url, start.logs[url])  # type: ignore[attr-defined]

        yield serving


def client_for(transport: str, url: str) -> Client:
    if transport == "sse":
        return Client(sse_client(url), mode="legacy")
    return Client(url, mode="legacy")


class CallInFlight:
    """`check_link` started on `client`; `outcome` is its result or the error it raised."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.outcome: CallToolResult | Exception | None = None
        self.done = anyio.Event()

    async def run(self) -> None:
        try:
            self.outcome = await self.client.call_tool("check_link", {})
        except Exception as error:
            self.outcome = error
        self.done.set()


def announced_stopping(server: Serving) -> bool:
    """True once the server has taken the signal (or, before the fix, already ended)."""
    deadline = time.monotonic() + MARGIN
    while time.monotonic() < deadline:
        if "Stopping" in server.stderr() or server.process.poll() is not None:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_sigterm_lets_the_call_in_flight_finish_refuses_new_ones_then_exits(
    serve: Callable[[str, float], Serving], held_link: HeldLink, transport: str
) -> None:
    grace = 30.0
    server = serve(transport, grace)
    async with client_for(transport, server.url) as client, anyio.create_task_group() as tasks:
        await client.list_tools()  # as hosts do; the SDK client checks answers against it
        call = CallInFlight(client)
        tasks.start_soon(call.run)
        with anyio.fail_after(MARGIN):
            await anyio.to_thread.run_sync(held_link.asked.wait)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(announced_stopping, server)

        try:
            refusal: object = await client.list_tools()
        except Exception as error:
            refusal = error

        held_link.release.set()
        with anyio.fail_after(grace):
            await call.done.wait()
        tasks.cancel_scope.cancel()  # the client's own streams end with the server

    result = call.outcome
    assert isinstance(result, CallToolResult), f"the call was cut: {result!r}"
    assert result.is_error is False
    assert result.structured_content["answered"] is True
    assert result.structured_content["instance_id_suffix"] == "…1234"
    assert isinstance(refusal, MCPError), f"a new request was served: {refusal!r}"
    assert "shutting down and takes no new requests" in str(refusal)
    assert server.process.wait(timeout=grace + MARGIN) == 0
    assert time.monotonic() - signalled < grace + MARGIN
    assert "Traceback" not in server.stderr()


async def test_a_call_outlasting_the_grace_gets_an_error_and_the_server_still_exits(
    serve: Callable[[str, float], Serving], held_link: HeldLink
) -> None:
    grace = 1.0
    server = serve("streamable-http", grace)
    async with client_for("streamable-http", server.url) as client:
        await client.list_tools()
        call = CallInFlight(client)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call.run)
            with anyio.fail_after(MARGIN):
                await anyio.to_thread.run_sync(held_link.asked.wait)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(grace + MARGIN):  # the Link is never released
                await call.done.wait()
        exit_code = await anyio.to_thread.run_sync(
            lambda: server.process.wait(timeout=grace + MARGIN)
        )
    assert isinstance(call.outcome, MCPError), f"no error answer: {call.outcome!r}"
    assert "stopped before this call finished" in str(call.outcome)
    assert "PIPER_MCP_SHUTDOWN_GRACE_SECONDS" in str(call.outcome)
    assert exit_code == 0
    assert time.monotonic() - signalled < grace + MARGIN
    assert "Stopped 1 call(s) still running after 1 s" in server.stderr()
