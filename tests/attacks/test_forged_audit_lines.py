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

FORGED_CLIENT = "evil 1\n2026-11-28T10:00:00.000+00:00  Claude  'github_token'  value  ok  env"


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
    done = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "audit"],
        env={**os.environ, "PIPER_MCP_AUDIT_FILE": str(trail)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1  # one entry, one line: nothing forged
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    assert "evil 1\\n2026-11-28" in done.stdout and "\\x1b]0;pwned\\x07token" in done.stdout
