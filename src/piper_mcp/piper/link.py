"""Piper Link discovery: which user this agent is serving (the instanceId)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from piper_mcp.piper.protocol import LinkContext

logger = logging.getLogger(__name__)

# The published SDK waits one second; Link is a local app, it answers at once or not at all.
DEFAULT_LINK_TIMEOUT = 1.0


@dataclass(frozen=True)
class LinkProbe:
    """One attempt to reach Piper Link."""

    url: str
    instance_id: str | None
    latency_ms: float
    problem: str | None = None

    @property
    def answered(self) -> bool:
        return self.instance_id is not None


class PiperLink:
    """Finds the instanceId lazily; a found id is kept, a failure is retried next time.

    An instance id given in configuration wins and Link is never asked.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        configured_instance_id: str | None = None,
        *,
        timeout: float = DEFAULT_LINK_TIMEOUT,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = http
        self._configured = configured_instance_id
        self._discovered: str | None = None
        self._lock = asyncio.Lock()

    async def instance_id(self) -> str | None:
        if self._configured:
            return self._configured
        if self._discovered:
            return self._discovered
        async with self._lock:
            if not self._discovered:
                self._discovered = (await self.probe()).instance_id
            return self._discovered

    def forget(self) -> bool:
        """Drop a discovered id (the backend rejected it: the user signed in again?).

        True when there was one to drop; a configured id is never dropped.
        """
        had = self._discovered is not None and not self._configured
        self._discovered = None
        return had

    async def probe(self) -> LinkProbe:
        """Ask Link now, whatever is cached; never raises."""
        started = time.perf_counter()

        def probe_result(instance_id: str | None, problem: str | None = None) -> LinkProbe:
            latency = (time.perf_counter() - started) * 1000
            if problem:
                logger.info("Piper Link at %s: %s", self.url, problem)
            return LinkProbe(self.url, instance_id, round(latency, 1), problem)

        try:
            # A wall-clock bound too: httpx's timeout bounds each read, and a Link that
            # trickles its answer a byte at a time never trips it.
            async with asyncio.timeout(self.timeout):
                response = await self._http.get(self.url, timeout=self.timeout)
        except (httpx.TimeoutException, TimeoutError):
            return probe_result(None, f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as error:
            return probe_result(None, f"not reachable ({type(error).__name__})")
        if response.is_error:
            return probe_result(None, f"answered HTTP {response.status_code}")
        try:
            context = LinkContext.model_validate_json(response.content)
        except ValidationError:
            return probe_result(None, "answered without a valid instanceId")
        return probe_result(context.instanceId)
