"""The HTTP transports' face (SECURITY.md rule 7): bearer auth, Host/Origin, limits, binding."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from piper_mcp.local.vault import Vault
from tests.processes import mcp_http_servers

TOKEN = "http-token-canary-0b5e-2f9c41d87a6e3b50"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(piper_home: Path, cli_env: dict[str, str]) -> Iterator[Callable[..., str]]:
    """Start `serve --local --transport streamable-http` with PIPER_MCP_HTTP_TOKEN set."""
    Vault.init(piper_home)[0].close()
    with mcp_http_servers({**cli_env, "PIPER_MCP_HTTP_TOKEN": TOKEN}) as start:
        yield lambda *flags: start("streamable-http", *flags)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One guarded server for the tests that only send requests to it (changing nothing)."""
    home = tmp_path_factory.mktemp("http-face") / "piper-home"
    Vault.init(home)[0].close()
    env = {**os.environ, "PIPER_HOME": str(home), "PIPER_MCP_HTTP_TOKEN": TOKEN}
    with mcp_http_servers(env) as start:
        yield start("streamable-http")


def post(url: str, headers: dict[str, str], **kwargs: object) -> httpx.Response:
    return httpx.post(url, json=INITIALIZE, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_without_the_bearer_token_nothing_answers(served: str) -> None:
    url = served
    assert post(url, {**HEADERS, "authorization": ""}).status_code == 401
    wrong = post(url, {**HEADERS, "authorization": "Bearer not-it"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in wrong.text
    assert post(url, HEADERS).status_code == 200


def test_a_token_in_the_query_string_is_refused(served: str) -> None:
    url = served
    refused = post(f"{url}?access_token={TOKEN}", {**HEADERS, "authorization": ""})
    assert refused.status_code == 400
    assert "never accepted in the query string" in refused.json()["error"]


def test_host_and_origin_are_checked_against_the_bound_address(served: str) -> None:
    url = served
    port = urlsplit(url).port
    assert post(url, {**HEADERS, "host": f"evil.example:{port}"}).status_code == 421
    assert post(url, {**HEADERS, "origin": "http://evil.example"}).status_code == 403
    assert post(url, {**HEADERS, "origin": f"http://localhost:{port}"}).status_code == 200


def test_an_extra_host_can_be_allowed(guarded: Callable[..., str]) -> None:
    url = guarded("--allow-host", "piper.test:*")
    assert post(url, {**HEADERS, "host": "piper.test:8080"}).status_code == 200


def test_oversized_requests_are_refused(served: str) -> None:
    url = served
    big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 70_000}}
    response = httpx.post(url, json=big, headers=HEADERS, timeout=10)
    assert response.status_code == 413


@pytest.mark.anyio
async def test_a_client_with_the_token_works(served: str) -> None:
    url = served
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"})
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        tools = await client.list_tools()
    assert len(tools.tools) == 4


def test_binding_beyond_loopback_without_a_token_refuses_to_start(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "piper_mcp",
            "serve",
            "--local",
            "--transport",
            "streamable-http",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Refusing to serve MCP on 0.0.0.0" in done.stderr
    assert "--auth-token-file" in done.stderr and "PIPER_MCP_HTTP_TOKEN" in done.stderr


def test_idle_sessions_are_closed_and_free_their_place(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    Vault.init(piper_home)[0].close()
    env = {
        **cli_env,
        "PIPER_MCP_HTTP_TOKEN": TOKEN,
        "PIPER_MCP_SESSION_IDLE_SECONDS": "1",
        "PIPER_MCP_MAX_SESSIONS": "1",
    }
    with mcp_http_servers(env) as start:
        url = start("streamable-http", "--log-level", "INFO")
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        with httpx.Client(timeout=10) as host:  # the ping follows at once, within the idle second
            opened = host.post(url, json=INITIALIZE, headers=HEADERS)
            session = opened.headers["mcp-session-id"]
            again = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
            assert host.post(url, json=ping, headers=again).status_code == 200
        log = start.logs[url]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60  # a bound for a broken server, not a measurement
        while "idle timeout" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # a ping would keep the session alive: watch its log instead
        assert httpx.post(url, json=ping, headers=again, timeout=10).status_code == 404
        assert post(url, HEADERS).status_code == 200
