"""Issue 9.9 (the MCP server's trail): a client's name cannot forge lines or drive a terminal.

An MCP client chooses its own name (clientInfo), and the audit trail records it.
`piper-mcp audit` prints each entry on one line with control characters escaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.processes import initialize, piper_mcp

FORGED_CLIENT = "evil 1\n2026-11-28T10:00:00.000+00:00  Claude  'github_token'  value  ok  env"


def audit_listing(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What `piper-mcp audit` prints, as a person runs it in a terminal."""
    done = piper_mcp("audit", env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_piper_mcp_audit_prints_hostile_names_escaped_on_one_line(tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    entry = {
        "time": "2026-11-28T09:00:00.000+00:00",
        "client": FORGED_CLIENT,
        "variable": "x\x1b[2J\u202e",
        "mode": "\x1b]0;pwned\x07token",
        "outcome": "refused",
        "source": None,
    }
    trail.write_text(json.dumps(entry) + "\n")
    done = audit_listing({**os.environ, "PIPER_MCP_AUDIT_FILE": str(trail)})
    assert done.stdout.count("\n") == 1  # one entry, one line: nothing forged
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    assert "evil 1\\n2026-11-28" in done.stdout and "\\x1b]0;pwned\\x07token" in done.stdout


def test_a_hostile_client_name_sent_over_json_rpc_lands_escaped_on_one_line(
    tmp_path: Path,
) -> None:
    """As the attacker does it: a raw JSON-RPC client on `serve --local`'s stdin names itself
    with a newline, a forged entry and terminal escapes, then makes calls."""
    home = tmp_path / "piper-home"
    env = {**os.environ, "PIPER_HOME": str(home)}
    hostile = f"{FORGED_CLIENT}\x1b[2J\x1b]0;pwned\x07"
    messages = [
        initialize(hostile),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        *(
            {
                "jsonrpc": "2.0",
                "id": n,
                "method": "tools/call",
                "params": {"name": "get_secret", "arguments": {"variable": "github_token"}},
            }
            for n in (1, 2)
        ),
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", "serve", "--local"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write("".join(json.dumps(message) + "\n" for message in messages))
    server.stdin.flush()
    answers = [json.loads(server.stdout.readline()) for _ in range(3)]  # a host waits for them
    server.stdin.close()
    assert server.wait(timeout=30) == 0
    answers.sort(key=lambda answer: answer["id"])  # the two calls may finish in any order
    assert [answer["id"] for answer in answers] == [0, 1, 2]
    assert all(answer["result"]["isError"] for answer in answers[1:])  # declared by no one

    done = audit_listing(env)
    assert done.stdout.count("\n") == 2  # two calls, two lines: nothing forged
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert done.stdout.count("evil 1\\n2026-11-28") == 2
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in done.stdout
