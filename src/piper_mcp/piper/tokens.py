"""Agent tokens (protocol v1): one per (audience, instanceId), reused until near expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from piper_mcp.piper.protocol import TokenResponse

# A token is not used in its last minute, so it cannot expire in flight.
EXPIRY_MARGIN_SECONDS = 60.0

TokenKey = tuple[str, str | None]


@dataclass(frozen=True)
class _CachedToken:
    access_token: str
    usable_until: float


class AgentTokenCache:
    """Caches agent tokens; concurrent callers for one key share a single fetch."""

    def __init__(
        self,
        fetch: Callable[[str, str | None], Awaitable[TokenResponse]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._tokens: dict[TokenKey, _CachedToken] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}

    async def get(self, audience: str, instance_id: str | None) -> str:
        key = (audience, instance_id)
        cached = self._usable(key)
        if cached:
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._usable(key)
            if cached:
                return cached
            started = self._clock()
            answer = await self._fetch(audience, instance_id)
            self._tokens[key] = _CachedToken(
                answer.access_token, started + answer.expires_in - EXPIRY_MARGIN_SECONDS
            )
            return answer.access_token

    def drop(self, audience: str, instance_id: str | None, token: str) -> None:
        """Forget `token` (the backend rejected it), unless a newer one already replaced it."""
        cached = self._tokens.get((audience, instance_id))
        if cached and cached.access_token == token:
            del self._tokens[(audience, instance_id)]

    def clear(self) -> None:
        self._tokens.clear()

    def _usable(self, key: TokenKey) -> str | None:
        cached = self._tokens.get(key)
        if cached and self._clock() < cached.usable_until:
            return cached.access_token
        return None
