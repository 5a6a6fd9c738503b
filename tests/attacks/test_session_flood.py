"""Issue 9.8 (the HTTP half) and 10.7: a flood of sessions stays within a cap.

Abandoned (idle) sessions make room for new ones, least recently used first; only when
every session is busy is a new one refused, with an error that says what to do.
"""

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


def open_session(url: str, n: int) -> str:
    opened = httpx.post(url, json=initialize(f"flood-{n}", n), headers=HEADERS)
    assert opened.status_code == 200, opened.text
    return opened.headers["mcp-session-id"]


def ping(url: str, session: str) -> int:
    headers = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    body = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    return httpx.post(url, json=body, headers=headers).status_code


def test_abandoned_sessions_make_room_least_recently_used_first(start: object) -> None:
    """Issue 10.7: a full table of abandoned sessions no longer locks new clients out."""
    url = start("streamable-http")  # type: ignore[operator]
    sessions = [open_session(url, n) for n in range(CAP)]
    assert ping(url, sessions[0]) == 200  # now sessions[1] is the least recently used

    newcomer = open_session(url, 100)
    assert ping(url, sessions[1]) == 404  # closed to make room; its client opens anew
    assert [ping(url, s) for s in (sessions[0], sessions[2], newcomer)] == [200, 200, 200]

    flood = [open_session(url, 200 + n) for n in range(10)]  # the attacker keeps going
    assert [ping(url, s) for s in flood[-CAP:]] == [200] * CAP
    assert [ping(url, s) for s in (sessions[0], sessions[2], newcomer)] == [404, 404, 404]
    log = start.logs[url].read_text()  # type: ignore[attr-defined]
    assert log.count("Closing the least recently used idle MCP sessions") == 1, log
    assert "Refusing" not in log


def test_a_delete_frees_its_place_without_closing_another(start: object) -> None:
    url = start("streamable-http")  # type: ignore[operator]
    sessions = [open_session(url, n) for n in range(CAP)]
    closed = httpx.delete(url, headers={**HEADERS, "mcp-session-id": sessions[0]})
    assert closed.status_code in (200, 204)
    open_session(url, 100)
    assert [ping(url, s) for s in sessions[1:]] == [200] * (CAP - 1)


def test_busy_sessions_are_never_closed_and_then_a_new_one_is_refused(start: object) -> None:
    url = start("streamable-http")  # type: ignore[operator]
    sessions = [open_session(url, n) for n in range(CAP)]
    with ExitStack() as open_streams, httpx.Client(timeout=10) as http:
        for session in sessions:  # each holds its stream for server messages open: busy
            headers = {
                **HEADERS,
                "mcp-session-id": session,
                "mcp-protocol-version": "2025-06-18",
            }
            stream = open_streams.enter_context(http.stream("GET", url, headers=headers))
            assert stream.status_code == 200
        for n in range(10):
            refused = http.post(url, json=initialize(f"flood-{100 + n}", 100 + n), headers=HEADERS)
            assert refused.status_code == 503
            assert "mcp-session-id" not in refused.headers
        error = refused.json()["error"]
        assert f"{CAP} open MCP sessions, its limit, and none is idle" in error
        assert "PIPER_MCP_MAX_SESSIONS" in error
        assert [ping(url, s) for s in sessions] == [200] * CAP
    log = start.logs[url].read_text()  # type: ignore[attr-defined]
    assert log.count("Refusing") == 1, log  # one warning for the flood, not one per request
    # Once a stream is closed (and the server has seen it), its session is idle again.
    for _ in range(50):
        opened = httpx.post(url, json=initialize("late", 300), headers=HEADERS)
        if opened.status_code == 200:
            break
        time.sleep(0.1)
    assert opened.status_code == 200


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
