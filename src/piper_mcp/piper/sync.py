"""`PiperClient`: the synchronous twin, a drop-in for the published SDK's client.

It runs an `AsyncPiperClient` on a private event loop in a daemon thread, so
it works from plain scripts, from threads, and from code that already runs
an event loop (a notebook), and its connection pool is shared across calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from piper_mcp.piper.client import AsyncPiperClient
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.settings import PiperSettings

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread (it never blocks interpreter exit)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="piper-client-loop", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class PiperClient:
    """Blocking Piper client; takes `AsyncPiperClient`'s (the SDK's) arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = _LoopThread()
        try:
            # Built on the loop's thread: its asyncio primitives belong to that loop.
            self._async = self._loop.run(_build(*args, **kwargs))
        except BaseException:
            self._loop.stop()
            raise

    @classmethod
    def from_settings(cls, settings: PiperSettings | None = None) -> PiperClient:
        """A client configured by `settings`, or by `PIPER_*` environment variables."""
        client = cls.__new__(cls)
        client._loop = _LoopThread()
        try:
            client._async = client._loop.run(_build_from_settings(settings))
        except BaseException:
            client._loop.stop()
            raise
        return client

    @property
    def settings(self) -> PiperSettings:
        return self._async.settings

    @property
    def client_id(self) -> str | None:
        return self._async.client_id

    @property
    def env_variable_prefix(self) -> str:
        return self._async.env_variable_prefix

    @property
    def env_variable_map(self) -> dict[str, str]:
        return self._async.env_variable_map

    def get_secret(
        self,
        variable_name: str,
        enable_env_fallback_for_this_call: bool | None = None,
        fallback_env_var_name: str | None = None,
        fetch_raw_secret: bool = False,
    ) -> SecretResult:
        """See `AsyncPiperClient.get_secret`."""
        return self._loop.run(
            self._async.get_secret(
                variable_name,
                enable_env_fallback_for_this_call,
                fallback_env_var_name,
                fetch_raw_secret,
            )
        )

    def read_secret_value(self, result: SecretResult) -> str:
        """See `AsyncPiperClient.read_secret_value`."""
        return self._loop.run(self._async.read_secret_value(result))

    def discover_local_instance_id(self) -> str | None:
        """The user's instanceId (configured, cached or asked of Piper Link now)."""
        return self._loop.run(self._async.link.instance_id())

    def close(self) -> None:
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def __enter__(self) -> PiperClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _build(*args: Any, **kwargs: Any) -> AsyncPiperClient:
    return AsyncPiperClient(*args, **kwargs)


async def _build_from_settings(settings: PiperSettings | None) -> AsyncPiperClient:
    return AsyncPiperClient.from_settings(settings)
