"""The whole Piper flow against the local backend over loopback HTTP, in v1 and v2."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import (
    AsyncPiperClient,
    PiperAuthError,
    PiperBackendError,
    PiperConfigError,
    PiperError,
    PiperForbiddenError,
    PiperGrantNeededError,
    PiperLinkNeededError,
    PiperRawSecretExchangeError,
)
from tests.conftest import (
    AGENT_ID,
    AGENT_SECRET,
    INSTANCE_ID,
    OPENAI_SECRET,
    OPENAI_VALUE,
    USER_ID,
    V1_AGENT_ID,
    credential_id,
)

pytestmark = pytest.mark.anyio


async def test_a_granted_variable_gives_an_sts_token_that_reads_the_secret(
    client_kwargs: dict[str, object], piper: LocalBackend
) -> None:
    async with AsyncPiperClient(**client_kwargs) as client:
        result = await client.get_secret("OpenAI API Key")
        assert result.as_dict() == {
            "source": "piper_sts",
            "value": result.value,
            "token_type": "Bearer",
            "expires_in": 3600,
            "piper_credential_id": credential_id(piper, OPENAI_SECRET),
            "piper_instance_id": INSTANCE_ID,
            "variable_name": "OpenAI API Key",
        }
        assert isinstance(result.value, str) and result.value.startswith("piper-sts-")
        assert await client.read_secret_value(result) == OPENAI_VALUE


async def test_fetch_raw_secret_exchanges_for_the_value(
    client_kwargs: dict[str, object], piper: LocalBackend
) -> None:
    async with AsyncPiperClient(**client_kwargs) as client:
        result = await client.get_secret("openai-api-key", fetch_raw_secret=True)
    assert result.as_dict() == {
        "source": "piper_raw_secret",
        "value": OPENAI_VALUE,
        "piper_credential_id": credential_id(piper, OPENAI_SECRET),
        "piper_instance_id": INSTANCE_ID,
        "variable_name": "openai-api-key",
    }


async def test_an_empty_string_secret_is_a_valid_raw_value(
    client_kwargs: dict[str, object], piper: LocalBackend
) -> None:
    piper.vault.put_secret("empty", "", owner_user_id=USER_ID)
    piper.vault.grant(USER_ID, str(client_kwargs["client_id"]), "slack_token", "empty")
    async with AsyncPiperClient(**client_kwargs) as client:
        result = await client.get_secret("slack_token", fetch_raw_secret=True)
    assert result["value"] == ""


async def test_a_missing_grant_raises_grant_needed_with_the_grant_page(
    client_kwargs: dict[str, object],
) -> None:
    async with AsyncPiperClient(**client_kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperGrantNeededError) as caught:
            await client.get_secret("Slack Token")
    error = caught.value
    assert (error.status_code, error.error_code) == (404, "mapping_not_found")
    assert error.error_details["error"] == "mapping_not_found"
    assert error.grant_url == (
        "https://agentpiper.com/secrets?response_type=code&scope=manage_grants"
        f"&client={client_kwargs['client_id']}&variable=Slack+Token"
    )
    assert error.grant_url in str(error)


async def test_an_inactive_grant_is_forbidden(
    client_kwargs: dict[str, object], piper: LocalBackend
) -> None:
    agent = str(client_kwargs["client_id"])
    piper.vault.grant(USER_ID, agent, "OpenAI API Key", OPENAI_SECRET, status="PAUSED")
    async with AsyncPiperClient(**client_kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperForbiddenError) as caught:
            await client.get_secret("OpenAI API Key")
    assert (caught.value.status_code, caught.value.error_code) == (403, "permission_denied")
    assert "active" in caught.value.advice


async def test_a_removed_secret_is_no_longer_granted(
    client_kwargs: dict[str, object], piper: LocalBackend
) -> None:
    async with AsyncPiperClient(**client_kwargs, enable_env_fallback=False) as client:
        issued = await client.get_secret("OpenAI API Key")
        piper.vault.remove_secret(OPENAI_SECRET)
        with pytest.raises(PiperGrantNeededError):
            await client.get_secret("OpenAI API Key", fetch_raw_secret=True)
        with pytest.raises(PiperError, match="permission denied"):
            await client.read_secret_value(issued)


async def test_a_grant_revoked_after_resolve_fails_the_raw_exchange(
    serve: Callable[[object], str], piper: LocalBackend, client_kwargs: dict[str, object]
) -> None:
    """Revocation takes effect between calls of one flow: the exchange checks again."""
    revoke_first = RevokeBeforeExchange(piper, str(client_kwargs["client_id"]))
    url = serve(revoke_first)
    kwargs = {**client_kwargs, "exchange_secret_url": f"{url}/piper-exchange-sts-for-secret"}
    async with AsyncPiperClient(**kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperRawSecretExchangeError) as caught:
            await client.get_secret("OpenAI API Key", fetch_raw_secret=True)
    assert (caught.value.status_code, caught.value.error_code) == (403, "permission_denied")


class RevokeBeforeExchange:
    """Forwards to the local backend, revoking Ada's OpenAI grant just before the exchange."""

    def __init__(self, piper: LocalBackend, agent: str) -> None:
        self.piper = piper
        self.agent = agent

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] == "http":
            self.piper.vault.revoke(USER_ID, self.agent, "OpenAI API Key")
        await self.piper.app.asgi(scope, receive, send)


async def test_an_unknown_user_context_is_refused(
    client_kwargs: dict[str, object], protocol_version: int
) -> None:
    kwargs = {**client_kwargs, "piper_link_instance_id": "instance-nobody"}
    async with AsyncPiperClient(**kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperAuthError) as caught:
            await client.get_secret("OpenAI API Key")
    assert (caught.value.status_code, caught.value.error_code) == (400, "invalid_request")
    if protocol_version == 1:
        assert "Piper Link" in caught.value.advice


async def test_an_unknown_agent_is_invalid_client(client_kwargs: dict[str, object]) -> None:
    kwargs = {**client_kwargs, "client_id": "agent-nobody"}
    async with AsyncPiperClient(**kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperAuthError) as caught:
            await client.get_secret("OpenAI API Key")
    assert (caught.value.status_code, caught.value.error_code) == (401, "invalid_client")
    assert "PIPER_CLIENT_ID" in str(caught.value)


async def test_a_wrong_client_secret_keeps_the_token_endpoints_status_and_code(
    piper: LocalBackend,
) -> None:
    kwargs = {
        "client_id": AGENT_ID,
        "client_secret": "a-wrong-client-secret-0123456789abcdef",
        **piper.client_settings(),
    }
    async with AsyncPiperClient(**kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperAuthError) as caught:
            await client.get_secret("OpenAI API Key")
    error = caught.value
    assert (error.status_code, error.error_code) == (401, "invalid_client")
    assert "piper-token-endpoint" in error.message
    assert piper.app.calls["piper-resolve-variable-mapping"] == 0


async def test_v1_sends_the_instance_id_to_the_token_endpoint(piper: LocalBackend) -> None:
    """Without it the token's subject would be the agent's owner, who granted nothing."""
    kwargs = {"client_id": V1_AGENT_ID, "client_secret": AGENT_SECRET}
    async with AsyncPiperClient(**kwargs, **piper.client_settings()) as client:
        result = await client.get_secret("database_url")
    assert result["piper_instance_id"] == INSTANCE_ID


async def test_no_link_and_no_instance_id_means_link_needed(
    client_kwargs: dict[str, object], unused_link_url: str
) -> None:
    kwargs = {**client_kwargs, "piper_link_service_url": unused_link_url}
    async with AsyncPiperClient(**kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperLinkNeededError, match="Piper Link did not answer") as caught:
            await client.get_secret("OpenAI API Key")
    assert "PIPER_INSTANCE_ID" in caught.value.advice


async def test_a_backend_that_is_down_is_a_backend_error(
    client_kwargs: dict[str, object], piper: LocalBackend, protocol_version: int
) -> None:
    piper.stop()
    async with AsyncPiperClient(
        **client_kwargs, piper_link_instance_id=INSTANCE_ID, enable_env_fallback=False
    ) as client:
        with pytest.raises(PiperBackendError, match="Could not reach") as caught:
            await client.get_secret("OpenAI API Key")
    assert "PIPER_" in caught.value.advice


async def test_without_a_client_id_piper_is_not_asked(piper: LocalBackend) -> None:
    async with AsyncPiperClient(**piper.client_settings(), enable_env_fallback=False) as client:
        with pytest.raises(PiperConfigError, match="PIPER_CLIENT_ID is not set"):
            await client.get_secret("OpenAI API Key")
    assert sum(piper.app.calls.values()) == 0


@pytest.mark.parametrize("bad", ["", "   ", None, 7, "x" * 10_000, "?!", "__"])
async def test_bad_names_fail_before_anything_is_sent(
    client_kwargs: dict[str, object], piper: LocalBackend, bad: object
) -> None:
    async with AsyncPiperClient(**client_kwargs) as client:
        with pytest.raises(ValueError):
            await client.get_secret(bad)  # type: ignore[arg-type]
    assert sum(piper.app.calls.values()) == 0
