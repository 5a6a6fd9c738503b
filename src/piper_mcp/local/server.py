"""Running the local backend: the protocol port and the Link port, in a background thread.

Used by the tests, the demo and (later) `piper-mcp local serve`. Ports may be
0 (the OS picks); the URLs to configure a client with are known after `start()`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from piper_mcp.local.app import PiperBackendApp
from piper_mcp.local.link import link_app
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.local.vault import MemoryVault
from piper_mcp.piper import protocol
from piper_mcp.piper.settings import DEFAULT_PROJECT_ID


@dataclass(frozen=True)
class Tls:
    certfile: Path
    keyfile: Path


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LocalBackend:
    """A running local Piper: `with LocalBackend(vault, instance_id=...) as piper: ...`."""

    def __init__(
        self,
        vault: MemoryVault,
        *,
        instance_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        link_port: int | None = 0,
        tls: Tls | None = None,
        tokens: TokenIssuer | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
    ) -> None:
        self.app = PiperBackendApp(vault, tokens or TokenIssuer(), project_id=project_id)
        self.vault = vault
        self.project_id = project_id
        self._instance_id = instance_id
        self._tls = tls
        self._api_socket = _bound_socket(host, port)
        self._link_socket = (
            _bound_socket("127.0.0.1", link_port)
            if instance_id is not None and link_port is not None
            else None
        )
        self._servers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def tokens(self) -> TokenIssuer:
        return self.app.tokens

    @property
    def base_url(self) -> str:
        host, port = self._api_socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def link_url(self) -> str | None:
        if self._link_socket is None:
            return None
        port = self._link_socket.getsockname()[1]
        return f"http://127.0.0.1:{port}{protocol.LINK_CONTEXT_PATH}"

    def client_settings(self) -> dict[str, Any]:
        """Keyword arguments that point a Piper client at this backend."""
        settings: dict[str, Any] = {
            "token_url": f"{self.base_url}/{protocol.TOKEN_FUNCTION}",
            "resolve_mapping_url": f"{self.base_url}/{protocol.RESOLVE_MAPPING_FUNCTION}",
            "get_scoped_url": f"{self.base_url}/{protocol.GET_SCOPED_FUNCTION}",
            "exchange_secret_url": f"{self.base_url}/{protocol.EXCHANGE_SECRET_FUNCTION}",
            "secret_manager_endpoint": self.base_url,
            "project_id": self.project_id,
        }
        if self.link_url:
            settings["piper_link_service_url"] = self.link_url
        return settings

    def start(self) -> LocalBackend:
        self._thread = threading.Thread(target=self._run, name="local-piper", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._failure is not None:
            raise RuntimeError("the local Piper backend did not start") from self._failure
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._api_socket.close()
        if self._link_socket is not None:
            self._link_socket.close()

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start()'s caller
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        tls: dict[str, Any] = {}
        if self._tls:
            tls = {"ssl_certfile": str(self._tls.certfile), "ssl_keyfile": str(self._tls.keyfile)}
        pairs = [
            (
                uvicorn.Server(uvicorn.Config(self.app.asgi, log_level="warning", **tls)),
                self._api_socket,
            )
        ]
        if self._link_socket is not None and self._instance_id is not None:
            link = uvicorn.Config(link_app(self._instance_id), log_level="warning")
            pairs.append((uvicorn.Server(link), self._link_socket))
        self._servers = [server for server, _ in pairs]
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in pairs]
        while not all(server.started for server in self._servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        self._ready.set()
        await asyncio.gather(*tasks)
