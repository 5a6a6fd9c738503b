"""What each Piper answer means to the client: the v2 wire format, 5xx, malformed bodies."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from piper_mcp.piper import (
    AsyncPiperClient,
    PiperBackendError,
    PiperForbiddenError,
    PiperRawSecretExchangeError,
)
from tests.conftest import AGENT_ID, INSTANCE_ID
from tests.scripted import Scripted, ScriptedPiper, json_answer

pytestmark = pytest.mark.anyio

RESOLVE = "/piper-resolve-variable-mapping"
SCOPED = "/getscopedgcpcredentials"
EXCHANGE = "/piper-exchange-sts-for-secret"

RESOLVED = json_answer(200, '{"credentialId": "cred-1"}')
SCOPED_OK = json_answer(
    200, '{"access_token": "sts-1", "expires_in": 3600, "granted_credential_ids": ["cred-1"]}'
)


@pytest.fixture
def scripted(serve: Callable[[object], str]) -> tuple[ScriptedPiper, AsyncPiperClient]:
    backend = ScriptedPiper()
    url = serve(backend.asgi)
    client = AsyncPiperClient(
        AGENT_ID,
        piper_link_instance_id=INSTANCE_ID,
        resolve_mapping_url=url + RESOLVE,
        get_scoped_url=url + SCOPED,
        exchange_secret_url=url + EXCHANGE,
        enable_env_fallback=False,
    )
    return backend, client


async def test_v2_bodies_name_the_agent_and_user_and_switch_to_camel_case(
    scripted: tuple[ScriptedPiper, AsyncPiperClient],
) -> None:
    backend, client = scripted
    backend.script(RESOLVE, RESOLVED)
    backend.script(SCOPED, SCOPED_OK)
    backend.script(EXCHANGE, json_answer(200, '{"secret_value": {"nested": ["json", 1]}}'))
    async with client:
        result = await client.get_secret("My Key", fetch_raw_secret=True)
    assert result["value"] == {"nested": ["json", 1]}
    sent = {path: json.loads(calls[0].body) for path, calls in backend.requests.items()}
    assert sent == {
        RESOLVE: {"agentClientId": AGENT_ID, "instanceId": INSTANCE_ID, "variableName": "my_key"},
        SCOPED: {"agentClientId": AGENT_ID, "instanceId": INSTANCE_ID, "credentialIds": ["cred-1"]},
        EXCHANGE: {
            "agentClientId": AGENT_ID,
            "instanceId": INSTANCE_ID,
            "piperCredentialId": "cred-1",
        },
    }
    assert all("authorization" not in calls[0].headers for calls in backend.requests.values())


async def test_an_empty_grant_list_is_permission_denied(
    scripted: tuple[ScriptedPiper, AsyncPiperClient],
) -> None:
    backend, client = scripted
    backend.script(RESOLVE, RESOLVED)
    backend.script(
        SCOPED, json_answer(200, '{"access_token": "sts", "granted_credential_ids": []}')
    )
    async with client:
        with pytest.raises(PiperForbiddenError) as caught:
            await client.get_secret("My Key")
    assert caught.value.error_code == "permission_denied_for_all_ids"


@pytest.mark.parametrize(
    ("path", "answer", "says"),
    [
        (RESOLVE, json_answer(500, '{"error": "internal"}'), "answered 500 internal"),
        (RESOLVE, Scripted(503, b"upstream down", "text/plain"), "answered 503 http_503"),
        (RESOLVE, Scripted(200, b"<html>oops</html>", "text/html"), "not a valid ResolveResponse"),
        (RESOLVE, json_answer(200, '{"credentialId": ""}'), "credentialId"),
        (RESOLVE, json_answer(200, '["a list"]'), "not a valid ResolveResponse"),
        (SCOPED, json_answer(200, '{"granted_credential_ids": ["cred-1"]}'), "access_token"),
        (SCOPED, json_answer(200, '{"access_token": "sts"}'), "granted_credential_ids"),
    ],
)
async def test_server_errors_and_malformed_answers_are_backend_errors(
    scripted: tuple[ScriptedPiper, AsyncPiperClient], path: str, answer: Scripted, says: str
) -> None:
    backend, client = scripted
    backend.script(RESOLVE, RESOLVED)
    backend.script(SCOPED, SCOPED_OK)
    backend.script(path, answer)
    async with client:
        with pytest.raises(PiperBackendError, match=says) as caught:
            await client.get_secret("My Key")
    assert caught.value.status_code == answer.status


async def test_a_non_json_error_body_is_kept_as_text(
    scripted: tuple[ScriptedPiper, AsyncPiperClient],
) -> None:
    backend, client = scripted
    backend.script(RESOLVE, RESOLVED)
    backend.script(SCOPED, SCOPED_OK)
    backend.script(EXCHANGE, Scripted(400, b"bad exchange", "text/plain"))
    async with client:
        with pytest.raises(PiperRawSecretExchangeError) as caught:
            await client.get_secret("My Key", fetch_raw_secret=True)
    error = caught.value
    assert (error.status_code, error.error_code, error.error_details) == (
        400,
        "http_400",
        "bad exchange",
    )


async def test_a_null_raw_secret_is_malformed_and_never_echoed(
    scripted: tuple[ScriptedPiper, AsyncPiperClient],
) -> None:
    backend, client = scripted
    backend.script(RESOLVE, RESOLVED)
    backend.script(SCOPED, SCOPED_OK)
    backend.script(EXCHANGE, json_answer(200, '{"secret_value": null, "hint": "canary-xyz"}'))
    async with client:
        with pytest.raises(PiperBackendError, match="secret_value") as caught:
            await client.get_secret("My Key", fetch_raw_secret=True)
    assert "canary-xyz" not in str(caught.value)


async def test_a_backend_slower_than_its_timeout_is_a_backend_error(
    scripted: tuple[ScriptedPiper, AsyncPiperClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_RESOLVE_TIMEOUT", "0.2")
    monkeypatch.setenv("PIPER_RETRY_ATTEMPTS", "2")
    backend, configured = scripted
    client = AsyncPiperClient(AGENT_ID, **_urls(configured))
    backend.script(RESOLVE, Scripted(200, b'{"credentialId": "c"}', delay=2))
    async with client:
        with pytest.raises(PiperBackendError, match=r"did not answer within 0\.2 s \(2 attempts\)"):
            await client.get_secret("My Key")
    assert len(backend.requests[RESOLVE]) == 2


def _urls(client: AsyncPiperClient) -> dict[str, object]:
    settings = client.settings
    return {
        "piper_link_instance_id": settings.instance_id,
        "resolve_mapping_url": settings.resolve_mapping_url,
        "get_scoped_url": settings.get_scoped_url,
        "exchange_secret_url": settings.exchange_secret_url,
        "enable_env_fallback": False,
    }
