"""Issue 9.9: no forged audit lines, no terminal escapes, from names a caller chooses."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
import pytest

from tests.cli.conftest import Cli, Serving, cli, cli_env, piper_home, serve_local  # noqa: F401

FORGED = [
    "x\n2026-11-28 12:00:00  local-agent  piper-exchange-sts-for-secret  ok",
    "\x1b[2J\x1b[31mred",
    "right\u202eto-left",
    "nul\x00byte",
]


@pytest.mark.parametrize("forged", FORGED)
def test_control_characters_in_protocol_fields_are_refused(
    cli: Cli,  # noqa: F811
    serve_local: Callable[..., Serving],  # noqa: F811
    forged: str,
) -> None:
    cli("local", "init")
    base = serve_local().info["url"]
    v2 = {"agentClientId": "local-agent", "instanceId": "i", "variableName": "v"}
    for field in v2:
        answer = httpx.post(f"{base}/piper-resolve-variable-mapping", json={**v2, field: forged})
        assert answer.status_code == 400, field
        assert "control characters" in answer.json()["error_description"]
    token = httpx.post(
        f"{base}/piper-token-endpoint",
        data={
            "grant_type": "client_credentials",
            "client_id": forged,
            "client_secret": "s" * 40,
            "audience": f"{base}/piper-resolve-variable-mapping",
        },
    )
    assert token.status_code == 400
    listing = cli("local", "audit").out
    assert "\x1b" not in listing and "\u202e" not in listing
    *entries, vault = listing.splitlines()
    assert vault.startswith("Vault: ")
    assert all(line.count("  ") >= 4 for line in entries)  # one entry per line


def test_local_audit_prints_stored_names_escaped(
    cli: Cli,  # noqa: F811
    piper_home: object,  # noqa: F811
) -> None:
    """Entries written before names were checked (an older vault) still print safely."""
    cli("local", "init")
    with sqlite3.connect(f"{piper_home}/vault.sqlite3") as db:
        db.execute(
            "INSERT INTO audit (at, client_id, action, subject, outcome)"
            " VALUES (0, ?, 'a', ?, 'ok')",
            (FORGED[0], FORGED[1]),
        )
    listing = cli("local", "audit").out
    assert listing.count("\n") == 2  # the entry, and the vault it is from
    assert "\\n2026-11-28" in listing and "\\x1b[2J" in listing and "\x1b" not in listing
