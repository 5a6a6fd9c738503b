"""The HTTP face's own checks, in front of the SDK's transport.

Bearer authentication (compared in constant time, never accepted from the
query string), the Host/Origin allow-list derived from the bound address, and
the cap on open sessions (the least recently used idle one closed to make room).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piper_mcp.network import is_loopback_host
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

    SSE sessions are the open `GET stream_path` streams, counted here; one more is refused.

    Streamable HTTP sessions are admitted by the SDK (`max_sessions`). A session a client
    abandoned without a DELETE stays open until `idle_seconds` pass, so at the limit a new
    session would be refused for up to that long. Instead the least recently used idle
    session (no request in flight, no open stream) is closed to make room: its client, if
    it is still there, gets a 404 and opens a new session, as the protocol has it do, while
    a refusal would have no such remedy. Only when every session is busy is a new one
    refused, and this refusal replaces the SDK's bare 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        *,
        stream_path: str | None = None,
        idle_seconds: float = math.inf,
        max_body_bytes: int = 65_536,
    ) -> None:
        self.app = app
        self.limit = limit
        self.stream_path = stream_path
        self.idle_seconds = idle_seconds
        self.max_body_bytes = max_body_bytes
        self.open_streams = 0
        # Streamable HTTP sessions seen opening, least recently used first.
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self._warned_at = {"refused": -math.inf, "closed": -math.inf}
        # The SDK warns on every session it refuses, so a flood would flood the log too;
        # `_warn` warns once a minute instead.
        logging.getLogger("mcp.server.streamable_http_manager").addFilter(_not_an_sdk_refusal)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.stream_path is not None:
            await self._sse(scope, receive, send)
            return
        session_id = dict(scope.get("headers", [])).get(b"mcp-session-id")
        if session_id is None:
            await self._opening(scope, receive, send)
        else:
            await self._in_session(session_id.decode("latin-1"), scope, receive, send)

    async def _sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET" or scope["path"] != self.stream_path:
            await self.app(scope, receive, send)
            return
        if self.open_streams >= self.limit:
            await self._refuse(send, "")
            return
        self.open_streams += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_streams -= 1

    async def _in_session(
        self, session_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            await self.app(scope, receive, send)
            return
        self.sessions.move_to_end(session_id)
        session.in_flight += 1
        status: list[int] = []
        try:
            await self.app(scope, receive, _watching(send, status))
        finally:
            session.in_flight -= 1
            session.idle_since = time.monotonic()
            # Gone: closed by its client (DELETE) or by the SDK (idle, 404).
            if status and (status[0] == 404 or (scope["method"] == "DELETE" and status[0] < 300)):
                self.sessions.pop(session_id, None)

    async def _opening(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request without a session, which may open one (the SDK decides)."""
        # Kept, to send it again if the SDK refuses it for want of room; the SDK reads the
        # whole body before it decides, so this holds no more than it does.
        body = await _read_body(receive, self.max_body_bytes)
        while True:
            refused = await self._try_opening(scope, _replaying(body, receive), send)
            if not refused:
                return
            # Only a real `initialize` makes room: a bare GET (any web page's <img>) or
            # junk, which could never open a session, must not close someone else's.
            opens = scope["method"] == "POST" and body.complete and _is_initialize(body)
            if not opens or not await self._close_least_recently_used(scope):
                await self._refuse(send, ", and none is idle")
                return

    async def _try_opening(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Relay one attempt: True if the SDK refused it for the session limit (not sent)."""
        refused = False
        opened: str | None = None

        async def relay(message: Message) -> None:
            nonlocal refused, opened
            if message["type"] == "http.response.start":
                if message["status"] == 503:
                    refused = True
                    return
                headers = dict(message.get("headers", []))
                if message["status"] < 400 and b"mcp-session-id" in headers:
                    opened = headers[b"mcp-session-id"].decode("latin-1")
                    self._forget_expired()
                    self.sessions[opened] = _Session(in_flight=1)
            if not refused:  # the SDK's own 503 body is dropped
                await send(message)

        try:
            await self.app(scope, receive, relay)
        finally:
            if opened is not None and (session := self.sessions.get(opened)) is not None:
                session.in_flight -= 1
                session.idle_since = time.monotonic()
        return refused

    async def _close_least_recently_used(self, scope: Scope) -> bool:
        """Close the idle session used longest ago, the way its client would: True if one was."""
        for session_id in [sid for sid, session in self.sessions.items() if not session.in_flight]:
            self.sessions.pop(session_id)
            # The request's own Host and Origin, so the SDK's checks pass as they did for it.
            headers = [(name, value) for name, value in scope["headers"] if name in ORIGIN_HEADERS]
            delete = {
                **scope,
                "method": "DELETE",
                "query_string": b"",
                "headers": [*headers, (b"mcp-session-id", session_id.encode("latin-1"))],
            }
            status: list[int] = []
            await self.app(delete, _empty_body, _watching(_discard, status))
            if status and status[0] < 300:
                self._warn(
                    "closed",
                    "Closing the least recently used idle MCP sessions to admit new ones: "
                    f"{self.limit} are open, the limit (PIPER_MCP_MAX_SESSIONS).",
                )
                return True
            # Already gone (expired, 404): try the next one.
        return False

    def _forget_expired(self) -> None:
        """Drop sessions the SDK has closed for idleness, so this table stays bounded."""
        now = time.monotonic()
        for session_id, session in list(self.sessions.items()):
            if not session.in_flight and now - session.idle_since > self.idle_seconds:
                del self.sessions[session_id]

    async def _refuse(self, send: Send, why: str) -> None:
        message = (
            f"piper-mcp already has {self.limit} open MCP sessions, its limit{why}: close idle "
            "clients and try again, or raise PIPER_MCP_MAX_SESSIONS."
        )
        self._warn("refused", f"Refusing new MCP sessions: {message}")
        await _refuse(send, 503, message)

    def _warn(self, kind: str, message: str) -> None:
        if time.monotonic() - self._warned_at[kind] > 60:  # once a minute, not once a request
            self._warned_at[kind] = time.monotonic()
            logger.warning("%s", message)


ORIGIN_HEADERS = (b"host", b"origin")


@dataclass
class _Session:
    in_flight: int = 0
    idle_since: float = field(default_factory=time.monotonic)


@dataclass
class _Body:
    messages: list[Message]
    complete: bool  # all of it is in `messages`


def _is_initialize(body: _Body) -> bool:
    try:
        message = json.loads(b"".join(part.get("body", b"") for part in body.messages))
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


async def _read_body(receive: Receive, limit: int) -> _Body:
    """The request's body messages, up to a little over `limit` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return _Body(messages, complete=False)
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return _Body(messages, complete=True)
        if size > limit:  # the SDK refuses it (413); no need to hold more
            return _Body(messages, complete=False)


def _replaying(body: _Body, receive: Receive) -> Receive:
    pending = list(body.messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _watching(send: Send, status: list[int]) -> Send:
    async def watch(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        await send(message)

    return watch


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    pass


def _not_an_sdk_refusal(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Refusing to open a new session")


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="piper-mcp"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
