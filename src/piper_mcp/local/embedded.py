"""The local Piper inside `piper-mcp serve --local`, reached in-process, never over a port.

The Piper functions and Link answer only through an `httpx.ASGITransport`, so
no other process on the machine can act as the served agent or learn the
user's instance id from it. Only the Secret Manager read route listens on
loopback: an STS token handed to the model needs it, and the token is its
authorisation. The grant page shares that port: only its one-time links open it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import httpx

from piper_mcp.network import bind, url_of
from piper_mcp.piper import protocol_names
from piper_mcp.piper.settings import DEFAULT_PROJECT_ID
from piper_mcp.piper.wire import new_http_client

if TYPE_CHECKING:
    from piper_mcp.local.grant_requests import GrantRequests
    from piper_mcp.local.tokens import TokenIssuer
    from piper_mcp.local.vault import Vault

# A name no request leaves the process for: the transport below answers it in-process.
IN_PROCESS_URL = "http://in-process.localhost"
LINK_MOUNT = "/link"
GRANT_PAGE_PATHS = ("/grant/", "/assets/")


def client_settings(secret_manager_url: str, project_id: str) -> dict[str, Any]:
    """`load_settings` keywords that point a Piper client at an embedded backend (v2)."""
    return {
        "token_url": f"{IN_PROCESS_URL}/{protocol_names.TOKEN_FUNCTION}",
        "resolve_mapping_url": f"{IN_PROCESS_URL}/{protocol_names.RESOLVE_MAPPING_FUNCTION}",
        "get_scoped_url": f"{IN_PROCESS_URL}/{protocol_names.GET_SCOPED_FUNCTION}",
        "exchange_secret_url": f"{IN_PROCESS_URL}/{protocol_names.EXCHANGE_SECRET_FUNCTION}",
        "link_url": f"{IN_PROCESS_URL}{LINK_MOUNT}{protocol_names.LINK_CONTEXT_PATH}",
        "secret_manager_endpoint": secret_manager_url,
        "project_id": project_id,
    }


class EmbeddedPiper:
    """A vault's backend for one agent: `client_settings()` and `http_client()` reach it.

    `sock`: the loopback socket for the Secret Manager route, if bound already (its URL
    goes into the settings before the backend exists). `grant_requests`: the server's
    open grant requests, whose page is then served on that socket too.
    """

    def __init__(
        self,
        vault: Vault,
        agent_id: str,
        *,
        tokens: TokenIssuer | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
        sock: socket.socket | None = None,
        grant_requests: GrantRequests | None = None,
    ) -> None:
        # Here, not at the top: `serve --local` answers `initialize` before it needs these.
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from piper_mcp.local.app import PiperBackendApp
        from piper_mcp.local.link import link_app
        from piper_mcp.local.server_thread import ServerThread, Site
        from piper_mcp.local.tokens import TokenIssuer

        self.vault = vault
        self.project_id = project_id
        self.app = PiperBackendApp(
            vault, tokens or TokenIssuer(), project_id=project_id, in_process_agent=agent_id
        )
        self.in_process = Starlette(
            routes=[
                Mount(LINK_MOUNT, link_app(vault.local_instance_id)),
                Mount("/", self.app.asgi),
            ]
        )
        sock = sock or bind("127.0.0.1", 0)
        self.secret_manager_url = url_of(sock)
        self._server = ServerThread([Site(Loopback(self, grant_requests), sock)])

    def http_client(self) -> httpx.AsyncClient:
        """A Piper client's HTTP client whose every request is answered in-process."""
        return new_http_client(transport=httpx.ASGITransport(app=self.in_process))

    def client_settings(self) -> dict[str, Any]:
        """`load_settings` keywords that point a Piper client at this backend (protocol v2)."""
        return client_settings(self.secret_manager_url, self.project_id)

    def start(self) -> EmbeddedPiper:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self.app.close()


class Loopback:
    """The loopback port's app: the Secret Manager route, and the grant page's two paths.

    The page is built at its first use: most servers never show it, and its templates
    cost memory.
    """

    def __init__(self, backend: EmbeddedPiper, grant_requests: GrantRequests | None) -> None:
        self._backend = backend
        self._grant_requests = grant_requests
        self._grant_page: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if self._grant_requests is not None and path.startswith(GRANT_PAGE_PATHS):
            if self._grant_page is None:
                from piper_mcp.local.grant_page import GrantPage

                backend = self._backend
                self._grant_page = GrantPage(
                    backend.vault, self._grant_requests, backend.secret_manager_url
                ).asgi
            await self._grant_page(scope, receive, send)
        else:
            await self._backend.app.secret_manager_asgi(scope, receive, send)
