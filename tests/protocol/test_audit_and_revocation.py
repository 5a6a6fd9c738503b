"""The audit trail (rule 8) and the bounded revocation window (rule 9), through the protocol."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from mcp import Client

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.piper.sts_cache import StsTokenCache
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, OPENAI_VALUE, USER_ID
from tests.protocol.conftest import DECLARED, make_server, structured, text_of

pytestmark = pytest.mark.anyio


def audited_server(piper: LocalBackend, path: Path, max_bytes: int = 1_048_576) -> object:
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
    service = CredentialService(client, lambda: list(DECLARED), policy=RevealPolicy("deny"))
    return build_server(service, audit=AuditTrail(path, max_bytes=max_bytes), transport="test")


async def test_every_outcome_is_one_json_line_without_values(
    piper: LocalBackend, tmp_path: Path, era: str
) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    async with Client(audited_server(piper, path), mode=era) as mcp:  # type: ignore[arg-type]
        token = structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
        await mcp.call_tool("get_secret", {"variable": "slack_token"})
        await mcp.call_tool("get_secret", {"variable": "OpenAI API Key", "mode": "value"})
        await mcp.call_tool("get_secret", {"variable": "PATH"})
        [content] = (await mcp.read_resource("piper://audit")).contents
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["variable"], e["mode"], e["outcome"], e["source"]) for e in entries] == [
        ("OpenAI API Key", "token", "ok", "piper_sts"),
        ("slack_token", "token", "refused", None),
        ("OpenAI API Key", "value", "refused", None),
        ("PATH", "token", "refused", None),
    ]
    assert all(e["transport"] == "test" and e["client"] for e in entries)
    assert entries[0]["consent_asked"] is False
    assert entries[2]["reason"] == "reveal_denied"  # a code: backend text never stored
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text() + content.text  # type: ignore[union-attr]
    assert token["token"] not in text and OPENAI_VALUE not in text
    page = json.loads(content.text)  # type: ignore[union-attr]
    assert page == {"entries": entries, "skipped": 0}


def test_the_trail_rotates_by_size(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    trail = AuditTrail(folder / "audit.jsonl", max_bytes=4096)
    for n in range(200):
        trail.record(variable=f"v{n}", outcome="ok")
    files = sorted(p.name for p in folder.iterdir())
    rotated = ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert files == [*rotated, "audit.jsonl.lock"]  # the lock servers sharing the trail take
    assert all(p.stat().st_size <= 4096 for p in folder.iterdir())
    assert trail.recent(1)[0]["variable"] == "v199"


async def test_a_revoked_grant_stops_being_served_within_the_window(
    piper: LocalBackend, era: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 30.0
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", str(window))
    now = [1000.0]
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
    assert client.sts_tokens.revocation_window == window
    client.sts_tokens = StsTokenCache(window, clock=lambda: now[0])
    async with Client(make_server(client), mode=era) as mcp:  # type: ignore[arg-type]
        first = structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
        piper.vault.revoke(USER_ID, AGENT_ID, "OpenAI API Key")
        now[0] += window - 0.1
        cached = structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
        assert cached["token"] == first["token"]  # served from the cache, within the window
        now[0] += 0.1
        result = await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"})
    assert result.is_error, "still served past the window"
    assert "has not granted" in text_of(result)


async def test_a_zero_window_stops_at_once(piper: LocalBackend) -> None:
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())  # PIPER_REVOCATION_WINDOW=0
    async with Client(make_server(client), mode="legacy") as mcp:
        structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
        piper.vault.revoke(USER_ID, AGENT_ID, "OpenAI API Key")
        assert (await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"})).is_error
