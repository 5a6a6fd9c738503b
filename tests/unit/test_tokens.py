"""Tokens: the client caches agent tokens; the local backend's issuer bounds what it keeps.

The client: per (audience, instanceId), until 60 s before expiry. The issuer
(issue 10, items 7 and 10): at most `max_tokens` of each kind, oldest dropped
first; life measured on its monotonic clock, never on the wall clock.
"""

from __future__ import annotations

import time

import anyio
import pytest

from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.piper.protocol import TokenResponse
from piper_mcp.piper.tokens import AgentTokenCache


class FakeTokenEndpoint:
    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.requests: list[tuple[str, str | None]] = []

    async def __call__(self, audience: str, instance_id: str | None) -> TokenResponse:
        self.requests.append((audience, instance_id))
        await anyio.sleep(0.01)  # let concurrent callers pile up
        return TokenResponse(access_token=f"token-{len(self.requests)}", expires_in=self.expires_in)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_a_token_is_reused_until_sixty_seconds_before_expiry() -> None:
    endpoint, clock = FakeTokenEndpoint(expires_in=3600), Clock()
    cache = AgentTokenCache(endpoint, clock=clock)
    assert await cache.get("aud", "inst") == "token-1"
    clock.now += 3600 - 60 - 1
    assert await cache.get("aud", "inst") == "token-1"
    clock.now += 1
    assert await cache.get("aud", "inst") == "token-2"


@pytest.mark.anyio
async def test_tokens_are_kept_apart_by_audience_and_instance() -> None:
    endpoint = FakeTokenEndpoint()
    cache = AgentTokenCache(endpoint, clock=Clock())
    await cache.get("resolve", "a")
    await cache.get("scoped", "a")
    await cache.get("resolve", "b")
    await cache.get("resolve", None)
    await cache.get("resolve", "a")
    assert endpoint.requests == [
        ("resolve", "a"),
        ("scoped", "a"),
        ("resolve", "b"),
        ("resolve", None),
    ]


@pytest.mark.anyio
async def test_a_token_shorter_than_the_margin_is_never_reused() -> None:
    endpoint = FakeTokenEndpoint(expires_in=30)
    cache = AgentTokenCache(endpoint, clock=Clock())
    assert await cache.get("aud", None) == "token-1"
    assert await cache.get("aud", None) == "token-2"


@pytest.mark.anyio
async def test_concurrent_callers_share_one_fetch() -> None:
    endpoint = FakeTokenEndpoint()
    cache = AgentTokenCache(endpoint, clock=Clock())
    seen: list[str] = []

    async def ask() -> None:
        seen.append(await cache.get("aud", "inst"))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(ask)
    assert seen == ["token-1"] * 20
    assert len(endpoint.requests) == 1


@pytest.mark.anyio
async def test_dropping_a_rejected_token_forces_a_new_one_but_spares_a_newer() -> None:
    endpoint = FakeTokenEndpoint()
    cache = AgentTokenCache(endpoint, clock=Clock())
    first = await cache.get("aud", "inst")
    cache.drop("aud", "inst", first)
    second = await cache.get("aud", "inst")
    assert second != first
    cache.drop("aud", "inst", first)  # a late report about the old token
    assert await cache.get("aud", "inst") == second


def test_the_issuer_keeps_at_most_max_tokens_of_each_kind_and_drops_the_oldest() -> None:
    issuer = TokenIssuer(max_tokens=100, clock=Clock())
    sts = [issuer.issue_sts_token("agent", "user", {f"cred-{n}": f"grant-{n}"}) for n in range(130)]
    agent = [
        issuer.issue_agent_token("agent", "user", "/resolve", agent_registered_at=1.0)
        for _ in range(130)
    ]
    assert (issuer.sts_tokens_kept, issuer.agent_tokens_kept) == (100, 100)
    assert [issuer.sts_token(token) is not None for token in sts] == [False] * 30 + [True] * 100
    assert [issuer.agent_token(token) is not None for token in agent] == (
        [False] * 30 + [True] * 100
    )
    kept = issuer.sts_token(sts[-1])
    assert kept is not None and kept.minted_under("cred-129") == "grant-129"
    assert kept.minted_under("cred-0") is None


def test_an_expired_token_is_told_apart_for_one_more_ttl_then_forgotten() -> None:
    clock = Clock()
    issuer = TokenIssuer(sts_ttl=60, clock=clock)
    token = issuer.issue_sts_token("agent", "user", {"cred": "grant"})
    clock.now += 59
    assert issuer.sts_token(token) is not None and not issuer.sts_token_expired(token)
    clock.now += 1
    assert issuer.sts_token(token) is None and issuer.sts_token_expired(token)
    clock.now += 60
    issuer.issue_sts_token("agent", "user", {"cred": "grant"})
    assert issuer.sts_tokens_kept == 1  # the expired record made room
    assert not issuer.sts_token_expired(token)
    assert issuer.has_sts_shape(token) and not issuer.has_sts_shape("piper-sts-forged")


@pytest.mark.parametrize("step", [-7200.0, 7200.0])
def test_stepping_the_wall_clock_changes_no_token_life(
    step: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = TokenIssuer()
    token = issuer.issue_sts_token("agent", "user", {"cred": "grant"})
    wall = time.time()
    monkeypatch.setattr(time, "time", lambda: wall + step)
    assert issuer.sts_token(token) is not None
    assert not issuer.sts_token_expired(token)


def test_revoking_all_refuses_every_token() -> None:
    issuer = TokenIssuer(clock=Clock())
    sts = issuer.issue_sts_token("agent", "user", {"cred": "grant"})
    agent = issuer.issue_agent_token("agent", "user", "/resolve", agent_registered_at=1.0)
    issuer.revoke_all()
    assert issuer.sts_token(sts) is None and issuer.agent_token(agent) is None
    assert (issuer.sts_tokens_kept, issuer.agent_tokens_kept) == (0, 0)
