"""Hostile peers and injected faults against the stdio transport, the HTTP session cap,
shutdown, and the audit trail (review of 3bf48e4).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.vault import Vault
from tests.cli.conftest import cli_env, piper_home  # noqa: F401
from tests.cli.test_stdio_faults import WAIT, Host, host, ping  # noqa: F401
from tests.processes import initialize, mcp_http_servers

CAP_BYTES = 65_536  # PIPER_MCP_MAX_REQUEST_BYTES' default: the stdio line cap
HEADERS = {"accept": "application/json, text/event-stream"}


# --- HTTP: who may close another client's idle session at the cap -------------------------


@pytest.fixture
def one_session_server(piper_home: Path, cli_env: dict[str, str]) -> Iterator[str]:  # noqa: F811
    """A streamable HTTP server whose cap is one session, already taken by a victim."""
    Vault.init(piper_home)[0].close()
    with mcp_http_servers({**cli_env, "PIPER_MCP_MAX_SESSIONS": "1"}) as start:
        yield start("streamable-http")


def open_session(url: str) -> str:
    opened = httpx.post(url, json=initialize("victim"), headers=HEADERS)
    assert opened.status_code == 200, opened.text
    return opened.headers["mcp-session-id"]


def session_alive(url: str, session: str) -> bool:
    headers = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    body = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    return httpx.post(url, json=body, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "method, body",
    [
        # What <img src="http://127.0.0.1:PORT/mcp"> sends from any web page: no Origin.
        ("GET", None),
        ("POST", b"not json"),
        ("POST", b'{"jsonrpc":"2.0","id":1,"method":"ping"}'),
    ],
    ids=["bare-get", "garbage-post", "non-initialize-post"],
)
def test_a_request_that_cannot_open_a_session_does_not_close_an_idle_one(
    one_session_server: str, method: str, body: bytes | None
) -> None:
    url = one_session_server
    victim = open_session(url)
    answer = httpx.request(
        method, url, content=body, headers={**HEADERS, "content-type": "application/json"}
    )
    assert answer.status_code >= 400  # it opened nothing
    assert session_alive(url, victim), "the victim's idle session was closed for it"


@pytest.mark.parametrize(
    "headers",
    [{"origin": "http://evil.example"}, {"host": "evil.example:80"}],
    ids=["foreign-origin", "rebound-host"],
)
def test_another_site_cannot_close_an_idle_session(
    one_session_server: str, headers: dict[str, str]
) -> None:
    url = one_session_server
    victim = open_session(url)
    answer = httpx.post(url, json=initialize("evil"), headers={**HEADERS, **headers})
    assert answer.status_code >= 400 and "mcp-session-id" not in answer.headers
    assert session_alive(url, victim)


# --- stdio: boundaries, shapes, and floods ---------------------------------------------------


def padded_ping(request_id: int, size: int, end: bytes = b"\n") -> bytes:
    """A ping whose line (without `end`) is exactly `size` bytes."""
    head = b'{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"_meta":{"pad":"' % request_id
    tail = b'"}}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail + end


def test_stdio_lines_at_the_cap_odd_shapes_and_stray_responses_get_one_answer_each(
    host: Callable[[], Host],  # noqa: F811
) -> None:
    server = host()
    server.send(padded_ping(1, CAP_BYTES))  # exactly at the cap: served
    server.send(padded_ping(2, CAP_BYTES + 1))  # one over: skipped, answered
    server.send(padded_ping(3, CAP_BYTES - 1, b"\r\n"))  # a CRLF host
    server.send(b"\n\r\n   \n")  # blank lines: nothing to answer
    server.send(b'[{"jsonrpc":"2.0","id":4,"method":"ping"}]\n')  # a batch (not in MCP)
    server.send(b'{"jsonrpc":"2.0","id":999,"result":{}}\n')  # answers to nothing we asked
    server.send(b'{"jsonrpc":"2.0","id":998,"error":{"code":1,"message":"no"}}\n')
    server.send(ping(5))

    answers = server.answers(5)  # in any order: the transport's own refusals go out at once
    served = sorted(a["id"] for a in answers if a.get("result") == {})
    refused = [(a["id"], a["error"]["code"]) for a in answers if "error" in a]
    assert served == [1, 3, 5]
    assert refused == [(None, -32600), (None, -32600)]
    server.send(ping(6))  # nothing more was queued (no second answer to anything)
    assert server.answer() == {"jsonrpc": "2.0", "id": 6, "result": {}}
    assert "x" * 100 not in server.stderr()


def test_stdio_a_request_with_a_null_id_is_answered(host: Callable[[], Host]) -> None:  # noqa: F811
    server = host()
    server.send(b'{"jsonrpc":"2.0","id":null,"method":"ping"}\n')
    server.send(ping(2))
    first = server.answer()
    assert first.get("error", {}).get("code") == -32600, first


@pytest.mark.parametrize(
    "junk, logged",
    [
        (b"x\n", "on stdin"),
        (b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":[]}}\n', ""),
    ],
    ids=["garbage-lines", "malformed-notifications"],
)
def test_stdio_a_flood_of_junk_costs_a_bounded_log(
    host: Callable[[], Host],  # noqa: F811
    junk: bytes,
    logged: str,
) -> None:
    server = host()
    flood = 2_000
    server.send(junk * flood + ping(1))
    answers = server.answers(flood + 1 if logged else 1)
    assert answers[-1] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    warnings = server.stderr().count("WARNING")
    assert warnings < 50, f"{warnings} warning lines for {flood} junk lines"


# --- signals -------------------------------------------------------------------------------


def test_sigterm_on_stdio_local_keeps_the_backends_audit_rows(
    piper_home: Path,  # noqa: F811
    cli_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    subprocess.run(
        [sys.executable, "-m", "piper_mcp", "local", "init"],
        env=cli_env,
        capture_output=True,
        check=True,
        timeout=WAIT,
    )
    vault = Vault.open(piper_home)
    vault.put_secret("S", "canary-value-5e1f", owner_user_id=vault.local_user_id)
    vault.grant(vault.local_user_id, "local-agent", "var", "S")
    rows_before = len(vault.audit(1000))
    vault.close()
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "piper_mcp", "serve", "--local"],
            env=cli_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    server = Host(process, tmp_path / "stderr.log")
    try:
        server.send_message(initialize("sigterm"))
        server.answer()
        server.send_message({"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"name": "list_variables", "arguments": {}}  # resolves "var": one audit row
        server.send_message({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call})
        assert server.answer()["id"] == 1
        process.send_signal(signal.SIGTERM)  # what a host sends to stop a server
        process.wait(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    vault = Vault.open(piper_home)
    rows = vault.audit(1000)[rows_before:]
    vault.close()
    assert [row.action for row in rows] == ["piper-resolve-variable-mapping"], rows


# --- the audit reader ----------------------------------------------------------------------


def test_piper_mcp_audit_reads_the_end_of_a_huge_trail_without_loading_it(
    tmp_path: Path,
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    trail = tmp_path / "audit.jsonl"
    with trail.open("wb") as file:
        file.truncate(3 << 30)  # 3 GiB, sparse: costs no disk
        file.seek(0, os.SEEK_END)
        file.write(b"\n" + json.dumps({"variable": "last", "outcome": "ok"}).encode() + b"\n")

    def one_gib_of_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "audit", "--json", "--limit", "1"],
        env={**cli_env, "PIPER_MCP_AUDIT_FILE": str(trail)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        preexec_fn=one_gib_of_memory,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"last"' in done.stdout
