"""Running the local backend: the protocol port and the Link port, in a background thread.

Used by the tests, the demo and `piper-mcp local serve`. Ports may be 0 (the
OS picks one); the URLs to configure a client with are known once bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from piper_mcp.local.app import PiperBackendApp
from piper_mcp.local.link import link_app
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind, url_of
from piper_mcp.piper import protocol_names
from piper_mcp.piper.settings import DEFAULT_PROJECT_ID, env_var_for_keyword

THREAD_NAME = "piper-server"


def _quiet_below_warning(record: logging.LogRecord) -> bool:
    """Only warnings and errors from the uvicorn that serves these sites, on any level."""
    return record.levelno >= logging.WARNING or record.threadName != THREAD_NAME


@dataclass(frozen=True)
class Tls:
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class Site:
    """One ASGI app on one bound socket."""

    app: Any
    sock: socket.socket
    tls: Tls | None = None


class ServerThread:
    """Serves sites with uvicorn on a private event loop in a daemon thread."""

    def __init__(self, sites: list[Site]) -> None:
        self.sites = sites
        self._servers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._failure is not None:
            raise RuntimeError("the server did not start") from self._failure

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for site in self.sites:
            site.sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start()'s caller
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        for name in ("uvicorn.error", "uvicorn.access"):
            if _quiet_below_warning not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_quiet_below_warning)
        for site in self.sites:
            config = uvicorn.Config(
                site.app,
                # None: uvicorn's loggers are the process's, and so are their levels (an
                # HTTP `serve` sets them for its own uvicorn); this one is kept quiet by
                # the filter above instead.
                log_level=None,
                # No handlers of its own: records reach the root handlers (and their
                # redactor) and never stdout, which is the protocol's in stdio mode.
                log_config=None,
                lifespan="off",
                timeout_graceful_shutdown=1,
                ssl_certfile=str(site.tls.certfile) if site.tls else None,
                ssl_keyfile=str(site.tls.keyfile) if site.tls else None,
            )
            self._servers.append(uvicorn.Server(config))
        tasks = [
            asyncio.create_task(server.serve(sockets=[site.sock]))
            for server, site in zip(self._servers, self.sites, strict=True)
        ]
        while not all(server.started for server in self._servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        self._ready.set()
        await asyncio.gather(*tasks)


class LocalBackend:
    """A running local Piper: `with LocalBackend(vault, instance_id=...) as piper: ...`.

    With an `instance_id`, it also plays Piper Link (on loopback) for that user.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        instance_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        link_port: int = 0,
        tls: Tls | None = None,
        tokens: TokenIssuer | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
    ) -> None:
        self.app = PiperBackendApp(vault, tokens or TokenIssuer(), project_id=project_id)
        self.vault = vault
        self.project_id = project_id
        self.link_url: str | None = None
        sites = [Site(self.app.asgi, bind(host, port), tls)]
        self.base_url = url_of(sites[0].sock, tls=tls is not None)
        if instance_id is not None:
            sites.append(Site(link_app(instance_id), bind("127.0.0.1", link_port)))
            self.link_url = url_of(sites[1].sock) + protocol_names.LINK_CONTEXT_PATH
        self._server = ServerThread(sites)

    @property
    def tokens(self) -> TokenIssuer:
        return self.app.tokens

    def client_settings(self) -> dict[str, Any]:
        """Keyword arguments that point a Piper client at this backend."""
        settings: dict[str, Any] = {
            "token_url": f"{self.base_url}/{protocol_names.TOKEN_FUNCTION}",
            "resolve_mapping_url": f"{self.base_url}/{protocol_names.RESOLVE_MAPPING_FUNCTION}",
            "get_scoped_url": f"{self.base_url}/{protocol_names.GET_SCOPED_FUNCTION}",
            "exchange_secret_url": f"{self.base_url}/{protocol_names.EXCHANGE_SECRET_FUNCTION}",
            "secret_manager_endpoint": self.base_url,
            "project_id": self.project_id,
        }
        if self.link_url:
            settings["piper_link_service_url"] = self.link_url
        return settings

    def environment(self) -> dict[str, str]:
        """The `PIPER_*` settings that point piper-mcp's client at this backend."""
        return {
            env_var_for_keyword(key): str(value) for key, value in self.client_settings().items()
        }

    def start(self) -> LocalBackend:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self.app.close()

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
