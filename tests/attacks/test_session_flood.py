"""Issue 9.8 (the HTTP half): a flood of sessions hits a cap with an error that says what to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.vault import Vault
from tests.cli.conftest import cli_env, piper_home  # noqa: F401
from tests.processes import initialize, mcp_http_servers

HEADERS = {"accept": "application/json, text/event-stream"}
CAP = 3


@pytest.fixture
def start(piper_home: Path, cli_env: dict[str, str]) -> Iterator[object]:  # noqa: F811
    Vault.init(piper_home)[0].close()
    with mcp_http_servers({**cli_env, "PIPER_MCP_MAX_SESSIONS": str(CAP)}) as start:
        yield start


def test_streamable_http_sessions_are_capped_and_freed_by_delete(start: object) -> None:
    url = start("streamable-http")  # type: ignore[operator]
    sessions = []
    for n in range(CAP):
        opened = httpx.post(url, json=initialize(f"flood-{n}", n), headers=HEADERS)
        assert opened.status_code == 200
        sessions.append(opened.headers["mcp-session-id"])

    for n in range(10):  # the attacker keeps trying
        refused = httpx.post(url, json=initialize(f"flood-{100 + n}", 100 + n), headers=HEADERS)
        assert refused.status_code == 503
        assert "mcp-session-id" not in refused.headers
    error = refused.json()["error"]
    assert "PIPER_MCP_MAX_SESSIONS" in error and f"{CAP} open MCP sessions" in error
    log = start.logs[url].read_text()  # type: ignore[attr-defined]
    assert log.count("Refusing") == 1, log  # one warning for the flood, not one per request

    ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    for session in sessions:  # the sessions already open keep working
        answer = httpx.post(url, json=ping, headers={**HEADERS, "mcp-session-id": session})
        assert answer.status_code == 200, answer.text

    closed = httpx.delete(url, headers={**HEADERS, "mcp-session-id": sessions[0]})
    assert closed.status_code in (200, 204)
    # The place the DELETE freed takes one new session, and only one.
    assert httpx.post(url, json=initialize("flood-200", 200), headers=HEADERS).status_code == 200
    assert httpx.post(url, json=initialize("flood-201", 201), headers=HEADERS).status_code == 503


def test_sse_streams_are_capped_too(start: object) -> None:
    url = start("sse")  # type: ignore[operator]
    with ExitStack() as open_streams, httpx.Client(timeout=10) as http:
        for _ in range(CAP):
            stream = open_streams.enter_context(http.stream("GET", url))
            assert stream.status_code == 200
        refused = http.get(url)
        assert refused.status_code == 503 and "PIPER_MCP_MAX_SESSIONS" in refused.text
    # Closed streams free their places (once the server has seen the disconnects).
    for _ in range(50):
        with httpx.Client(timeout=10) as http, http.stream("GET", url) as stream:
            if stream.status_code == 200:
                break
        time.sleep(0.1)
    assert stream.status_code == 200
