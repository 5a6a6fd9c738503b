"""Issue 9.6: revocation is final; a new grant never revives tokens minted under an old one."""

from __future__ import annotations

import httpx
import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient, SecretResult
from tests.conftest import (
    AGENT_SECRET,
    DB_SECRET,
    OPENAI_SECRET,
    OPENAI_VALUE,
    USER_ID,
    V1_AGENT_ID,
)

pytestmark = pytest.mark.anyio


def read(piper: LocalBackend, sts: SecretResult) -> httpx.Response:
    """What a model with an HTTP tool does with a token it was handed: read the secret."""
    name = f"projects/{piper.project_id}/secrets/{sts.piper_credential_id}/versions/latest"
    return httpx.get(
        f"{piper.base_url}/v1/{name}:access", headers={"authorization": f"Bearer {sts.value}"}
    )


async def sts_token(piper: LocalBackend) -> SecretResult:
    async with AsyncPiperClient(V1_AGENT_ID, AGENT_SECRET, **piper.client_settings()) as client:
        return await client.get_secret("OpenAI API Key")


async def test_a_token_minted_before_a_revoke_stays_dead_after_granting_again(
    piper: LocalBackend,
) -> None:
    old = await sts_token(piper)
    assert read(piper, old).status_code == 200
    piper.vault.revoke(USER_ID, V1_AGENT_ID, "OpenAI API Key")
    assert read(piper, old).status_code == 403
    piper.vault.grant(USER_ID, V1_AGENT_ID, "OpenAI API Key", OPENAI_SECRET)
    assert read(piper, old).status_code == 403  # the old token was revoked with its grant
    new = await sts_token(piper)
    assert read(piper, new).status_code == 200 and OPENAI_VALUE not in read(piper, old).text


async def test_pointing_a_variable_elsewhere_and_back_does_not_revive_a_token(
    piper: LocalBackend,
) -> None:
    old = await sts_token(piper)
    piper.vault.grant(USER_ID, V1_AGENT_ID, "OpenAI API Key", DB_SECRET)
    piper.vault.grant(USER_ID, V1_AGENT_ID, "OpenAI API Key", OPENAI_SECRET)
    assert read(piper, old).status_code == 403


async def test_removing_and_re_adding_the_secret_does_not_revive_a_token(
    piper: LocalBackend,
) -> None:
    old = await sts_token(piper)
    piper.vault.remove_secret(OPENAI_SECRET)
    piper.vault.put_secret(OPENAI_SECRET, OPENAI_VALUE, owner_user_id=USER_ID)
    piper.vault.grant(USER_ID, V1_AGENT_ID, "OpenAI API Key", OPENAI_SECRET)
    assert read(piper, old).status_code == 403
