"""Tokens that stop working before their holder expects (issue 10, items 10 and 7).

The backend's clock steps forward, or it drops a token to make room for newer
ones: Secret Manager answers Google's 401 (saying "expired" when it is), and
the client forgets the token at once and reads again with a fresh one, once.
Revocation stays final however many tokens are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.tokens import STS_TOKEN_TTL_SECONDS, TokenIssuer
from piper_mcp.piper import AsyncPiperClient, PiperError, SecretResult
from tests.conftest import (
    AGENT_ID,
    INSTANCE_ID,
    OPENAI_SECRET,
    OPENAI_VALUE,
    USER_ID,
    credential_id,
    seeded_vault,
)
from tests.scripted import ScriptedPiper, json_answer

pytestmark = pytest.mark.anyio

# What Google's Secret Manager answers for an expired access token.
GOOGLE_EXPIRED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "status": "UNAUTHENTICATED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED",
                "domain": "googleapis.com",
                "metadata": {
                    "service": "secretmanager.googleapis.com",
                    "method": "google.cloud.secretmanager.v1.SecretManagerService."
                    "AccessSecretVersion",
                },
            }
        ],
    }
}


class SteppedClock:
    """The backend's clock, stepped by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def backend_clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def piper(tmp_path: Path, backend_clock: SteppedClock) -> Iterator[LocalBackend]:
    """Ada's local Piper, its tokens timed by `backend_clock`."""
    tokens = TokenIssuer(clock=backend_clock)
    vault = seeded_vault(tmp_path / "vault")
    with LocalBackend(vault, instance_id=INSTANCE_ID, tokens=tokens) as backend:
        yield backend


def read(piper: LocalBackend, sts: SecretResult) -> httpx.Response:
    """What a model with an HTTP tool does with a token it was handed: read the secret."""
    name = f"projects/{piper.project_id}/secrets/{sts.piper_credential_id}/versions/latest"
    return httpx.get(
        f"{piper.base_url}/v1/{name}:access", headers={"authorization": f"Bearer {sts.value}"}
    )


async def test_an_expired_sts_token_is_refused_as_expired_not_as_permission_denied(
    piper: LocalBackend, backend_clock: SteppedClock
) -> None:
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        issued = await client.get_secret("OpenAI API Key")
    backend_clock.step(STS_TOKEN_TTL_SECONDS)
    refused = read(piper, issued)
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"  # as Google says it
    assert "expired" in error["message"]
    assert OPENAI_VALUE not in refused.text


async def test_after_the_backends_clock_steps_forward_the_client_reads_with_a_fresh_token(
    client_kwargs: dict[str, object],
    protocol_version: int,
    piper: LocalBackend,
    backend_clock: SteppedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refused token is dropped from the cache at once, not reused for the window."""
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", "30")
    async with AsyncPiperClient(**client_kwargs) as client:
        issued = await client.get_secret("OpenAI API Key")
        backend_clock.step(2 * 3600)
        assert await client.read_secret_value(issued) == OPENAI_VALUE
        again = await client.get_secret("OpenAI API Key")
    assert again["value"] != issued["value"]
    assert read(piper, again).status_code == 200
    # The first token and one fresh one (in v1, the expired agent token is refused once too).
    assert piper.app.calls["getscopedgcpcredentials"] == 2 + (protocol_version == 1)
    assert piper.app.calls["secretmanager.access"] == 3  # refused, retried, and ours above


async def test_a_token_refused_again_is_an_error_after_exactly_one_retry(
    piper: LocalBackend, serve: Callable[[object], str]
) -> None:
    """Against Google's own answer, whose message does not say "expired": its reason does."""
    google = ScriptedPiper()
    path = (
        f"/v1/projects/{piper.project_id}/secrets/{credential_id(piper, OPENAI_SECRET)}"
        "/versions/latest:access"
    )
    google.script(path, json_answer(401, json.dumps(GOOGLE_EXPIRED)))
    settings = {**piper.client_settings(), "secret_manager_endpoint": serve(google.asgi)}
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        issued = await client.get_secret("OpenAI API Key")
        with pytest.raises(PiperError, match=r"STS token .* \(it has expired\)") as caught:
            await client.read_secret_value(issued)
    assert "fresh token" in caught.value.advice
    assert len(google.requests[path]) == 2
    assert piper.app.calls["getscopedgcpcredentials"] == 2


async def test_an_agent_token_refused_after_a_clock_step_is_replaced_once(
    piper: LocalBackend, backend_clock: SteppedClock
) -> None:
    """Protocol v1: the agent token cache, which already worked this way, in the same scene."""
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        await client.get_secret("database_url")
        backend_clock.step(2 * 3600)
        result = await client.get_secret("database_url")
    assert result["source"] == "piper_sts"


async def test_a_token_dropped_for_room_is_refused_as_invalid_and_the_client_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", "30")
    tokens = TokenIssuer(max_tokens=5)
    vault = seeded_vault(tmp_path / "vault")
    with LocalBackend(vault, instance_id=INSTANCE_ID, tokens=tokens) as piper:
        async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
            issued = await client.get_secret("OpenAI API Key")
            for _ in range(5):  # other clients' tokens push it out
                tokens.issue_sts_token("another-agent", USER_ID, {"cred-x": "grant-x"})
            refused = read(piper, issued)
            assert await client.read_secret_value(issued) == OPENAI_VALUE
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert tokens.sts_tokens_kept == 5


async def test_revocation_refuses_every_affected_token_while_tokens_are_dropped(
    tmp_path: Path,
) -> None:
    tokens = TokenIssuer(max_tokens=10)
    vault = seeded_vault(tmp_path / "vault")
    with LocalBackend(vault, instance_id=INSTANCE_ID, tokens=tokens) as piper:
        async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
            issued = [await client.get_secret("OpenAI API Key") for _ in range(15)]

        def statuses() -> list[int]:
            return [read(piper, sts).status_code for sts in issued]

        assert statuses() == [401] * 5 + [200] * 10  # the oldest five were dropped
        vault.revoke(USER_ID, AGENT_ID, "OpenAI API Key")
        assert statuses() == [401] * 5 + [403] * 10
        vault.grant(USER_ID, AGENT_ID, "OpenAI API Key", OPENAI_SECRET)
        assert statuses() == [401] * 5 + [403] * 10  # revocation is final
        tokens.revoke_all()
        assert statuses() == [401] * 15
