"""The HTTP face's own checks, in front of the SDK's transport.

Bearer authentication (compared in constant time, never accepted from the
query string), the Host/Origin allow-list derived from the bound address, and
the cap on open sessions.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from urllib.parse import parse_qsl

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piper_mcp.piper.settings import is_loopback_host
from piper_mcp.secret_strength import checked_secret

logger = logging.getLogger(__name__)

CREDENTIAL_PARAMETERS = {"token", "access_token", "auth", "authorization", "api_key", "key"}


def transport_security(host: str, port: int, extra_hosts: list[str]) -> TransportSecuritySettings:
    """Host/Origin validation, always on: the bound address, its loopback names, and extras."""
    names = {host, "127.0.0.1", "localhost", "[::1]"} if is_loopback_host(host) else {host}
    hosts = sorted({f"{name}:{port}" for name in names} | set(extra_hosts))
    origins = sorted({f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class BearerGuard:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        # None means no authentication; an empty or weak token never does.
        self.token = (
            None if token is None else checked_secret(token, "the HTTP bearer token").encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if any(name.lower() in CREDENTIAL_PARAMETERS for name, _ in query):
            await _refuse(
                send,
                400,
                "Credentials are never accepted in the query string; "
                "send them in the Authorization header.",
            )
            return
        if self.token is not None:
            headers = dict(scope.get("headers", []))
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                await _refuse(send, 401, "Missing or wrong bearer token (PIPER_MCP_HTTP_TOKEN).")
                return
        await self.app(scope, receive, send)


class SessionLimit:
    """ASGI middleware: at most `limit` open MCP sessions, and a refusal that says what to do.

    Streamable HTTP sessions are admitted by the SDK (`max_sessions`), whose bare 503
    this replaces; SSE sessions are the open `GET stream_path` streams, counted here.
    """

    def __init__(self, app: ASGIApp, limit: int, *, stream_path: str | None = None) -> None:
        self.app = app
        self.limit = limit
        self.stream_path = stream_path
        self.open_streams = 0
        self._warned_at = -math.inf
        # The SDK warns on every session it refuses, so a flood would flood the log too;
        # `_refuse` warns once a minute instead.
        logging.getLogger("mcp.server.streamable_http_manager").addFilter(_not_an_sdk_refusal)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == self.stream_path:
            if self.open_streams >= self.limit:
                await self._refuse(send)
                return
            self.open_streams += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.open_streams -= 1
            return
        opens_a_session = b"mcp-session-id" not in dict(scope.get("headers", []))
        refused = False

        async def relay(message: Message) -> None:
            nonlocal refused
            if (
                opens_a_session
                and message["type"] == "http.response.start"
                and message["status"] == 503
            ):
                refused = True
                await self._refuse(send)
            elif not refused:  # the SDK's own 503 body is dropped
                await send(message)

        await self.app(scope, receive, relay)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"piper-mcp already has {self.limit} open MCP sessions, its limit: close idle "
            "clients and try again, or raise PIPER_MCP_MAX_SESSIONS."
        )
        if time.monotonic() - self._warned_at > 60:  # once a minute, not once a request
            self._warned_at = time.monotonic()
            logger.warning("Refusing new MCP sessions: %s", message)
        await _refuse(send, 503, message)


def _not_an_sdk_refusal(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Refusing to open a new session")


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="piper-mcp"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
