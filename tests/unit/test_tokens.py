"""Agent-token caching: per (audience, instanceId), until 60 s before expiry."""

from __future__ import annotations

import anyio
import pytest

from piper_mcp.piper.protocol import TokenResponse
from piper_mcp.piper.tokens import AgentTokenCache

pytestmark = pytest.mark.anyio


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


async def test_a_token_is_reused_until_sixty_seconds_before_expiry() -> None:
    endpoint, clock = FakeTokenEndpoint(expires_in=3600), Clock()
    cache = AgentTokenCache(endpoint, clock=clock)
    assert await cache.get("aud", "inst") == "token-1"
    clock.now += 3600 - 60 - 1
    assert await cache.get("aud", "inst") == "token-1"
    clock.now += 1
    assert await cache.get("aud", "inst") == "token-2"


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


async def test_a_token_shorter_than_the_margin_is_never_reused() -> None:
    endpoint = FakeTokenEndpoint(expires_in=30)
    cache = AgentTokenCache(endpoint, clock=Clock())
    assert await cache.get("aud", None) == "token-1"
    assert await cache.get("aud", None) == "token-2"


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


async def test_dropping_a_rejected_token_forces_a_new_one_but_spares_a_newer() -> None:
    endpoint = FakeTokenEndpoint()
    cache = AgentTokenCache(endpoint, clock=Clock())
    first = await cache.get("aud", "inst")
    cache.drop("aud", "inst", first)
    second = await cache.get("aud", "inst")
    assert second != first
    cache.drop("aud", "inst", first)  # a late report about the old token
    assert await cache.get("aud", "inst") == second
