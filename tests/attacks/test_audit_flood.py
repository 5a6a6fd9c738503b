"""Issue 9.8 (the vault's half): requests that prove nothing cannot grow the audit table."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from tests.conftest import AGENT_SECRET, V1_AGENT_ID

pytestmark = pytest.mark.anyio


def audit_rows(piper: LocalBackend) -> int:
    with sqlite3.connect(piper.vault.database) as db:
        (count,) = db.execute("SELECT count(*) FROM audit").fetchone()
    return int(count)


async def test_a_flood_of_unauthenticated_requests_is_counted_not_stored(
    piper: LocalBackend,
) -> None:
    before = audit_rows(piper)
    async with httpx.AsyncClient(base_url=piper.base_url) as attacker:
        for start in range(0, 600, 50):
            await asyncio.gather(
                *(
                    attacker.post(
                        "/piper-resolve-variable-mapping",
                        json={"variableName": "x", "agentClientId": f"fake-{n}", "instanceId": "i"},
                    )
                    for n in range(start, start + 50)
                )
            )
    flooded = audit_rows(piper) - before
    assert flooded <= piper.app.unproven.per_minute
    assert piper.app.unproven.suppressed == 600 - flooded

    # A real agent's calls are still recorded, each one.
    async with AsyncPiperClient(V1_AGENT_ID, AGENT_SECRET, **piper.client_settings()) as agent:
        await agent.get_secret("OpenAI API Key")
    recorded = piper.vault.audit(4)
    assert [entry.client_id for entry in recorded[-2:]] == [V1_AGENT_ID, V1_AGENT_ID]
    assert recorded[-1].outcome == "ok"


def test_the_audit_table_keeps_its_newest_rows_only(piper: LocalBackend) -> None:
    piper.vault.max_audit_rows = 500
    for n in range(3000):
        piper.vault.record("resolve", "ok", client_id=V1_AGENT_ID, subject=f"v{n}")
    assert audit_rows(piper) <= 500 + 1000  # pruned every 1 000 writes
    assert piper.vault.audit(1)[0].subject == "v2999"
