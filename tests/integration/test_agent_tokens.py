"""Agent tokens over the wire (v1): cached per function and user, one retry after a 401."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.piper import AsyncPiperClient, PiperAuthError
from tests.conftest import AGENT_ID, AGENT_SECRET, INSTANCE_ID, V1_AGENT_ID, seeded_vault
from tests.scripted import ScriptedPiper, json_answer

pytestmark = pytest.mark.anyio

TOKEN = "/piper-token-endpoint"
RESOLVE = "/piper-resolve-variable-mapping"
SCOPED = "/getscopedgcpcredentials"


def v1_client(piper: LocalBackend) -> AsyncPiperClient:
    return AsyncPiperClient(
        V1_AGENT_ID, AGENT_SECRET, enable_env_fallback=False, **piper.client_settings()
    )


def scripted_v1_client(url: str) -> AsyncPiperClient:
    """A v1 client whose token and resolve calls go to a scripted backend at `url`."""
    return AsyncPiperClient(
        AGENT_ID,
        AGENT_SECRET,
        piper_link_instance_id=INSTANCE_ID,
        token_url=url + TOKEN,
        resolve_mapping_url=url + RESOLVE,
        enable_env_fallback=False,
    )


async def test_one_token_per_function_serves_many_calls(piper: LocalBackend) -> None:
    async with v1_client(piper) as client:
        for _ in range(5):
            await client.get_secret("OpenAI API Key")
            await client.get_secret("database_url", fetch_raw_secret=True)
    calls = piper.app.calls
    assert calls["piper-token-endpoint"] == 3  # resolve, scoped, exchange
    assert calls["piper-resolve-variable-mapping"] == 10


async def test_tokens_that_expire_within_the_margin_are_fetched_each_time(tmp_path: Path) -> None:
    short_lived = TokenIssuer(agent_ttl=30)
    with LocalBackend(
        seeded_vault(tmp_path / "vault"), instance_id=INSTANCE_ID, tokens=short_lived
    ) as piper:
        async with v1_client(piper) as client:
            await client.get_secret("OpenAI API Key")
            await client.get_secret("OpenAI API Key")
        assert piper.app.calls["piper-token-endpoint"] == 4


async def test_a_rejected_token_is_dropped_and_the_call_retried_once(piper: LocalBackend) -> None:
    async with v1_client(piper) as client:
        await client.get_secret("OpenAI API Key")
        piper.tokens.revoke_all()  # e.g. the backend restarted
        result = await client.get_secret("OpenAI API Key")
    assert result["source"] == "piper_sts"
    calls = piper.app.calls
    assert calls["piper-token-endpoint"] == 4  # 2 at first, 2 fresh ones after the 401s
    assert calls["piper-resolve-variable-mapping"] == 3  # 1, then rejected + retried
    assert calls["getscopedgcpcredentials"] == 3


async def test_a_token_rejected_twice_is_an_auth_error_after_exactly_one_retry(
    serve: Callable[[object], str],
) -> None:
    backend = ScriptedPiper()
    backend.script(TOKEN, json_answer(200, '{"access_token": "t", "expires_in": 3600}'))
    backend.script(RESOLVE, json_answer(401, '{"error": "invalid_token"}'))
    url = serve(backend.asgi)
    async with scripted_v1_client(url) as client:
        with pytest.raises(PiperAuthError) as caught:
            await client.get_secret("OpenAI API Key")
    assert (caught.value.status_code, caught.value.error_code) == (401, "invalid_token")
    assert len(backend.requests[RESOLVE]) == 2
    assert len(backend.requests[TOKEN]) == 2


async def test_the_token_request_is_the_protocols_form(serve: Callable[[object], str]) -> None:
    backend = ScriptedPiper()
    backend.script(TOKEN, json_answer(200, '{"access_token": "t", "expires_in": 3600}'))
    backend.script(RESOLVE, json_answer(404, '{"error": "mapping_not_found"}'))
    url = serve(backend.asgi)
    async with scripted_v1_client(url) as client:
        with pytest.raises(PiperAuthError):
            await client.get_secret("My Key")
    token_request = backend.requests[TOKEN][0]
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_request.headers["user-agent"].startswith("piper-mcp/")
    assert parse_qs(token_request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": [AGENT_ID],
        "client_secret": [AGENT_SECRET],
        "audience": [url + RESOLVE],
        "piper_link_instance_id": [INSTANCE_ID],
    }
    resolve_request = backend.requests[RESOLVE][0]
    assert resolve_request.headers["authorization"] == "Bearer t"
    assert resolve_request.body == b'{"variableName":"my_key"}'
