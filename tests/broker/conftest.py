"""Two HTTPS servers on loopback: the API a rule allows, and another host that must get nothing.

Both present one trustme certificate for api.example.test, other.example.test,
localhost and 127.0.0.1; the tests trust its CA through `ssl_context` and map
the two names to 127.0.0.1 with an injected resolver, so nothing leaves the
machine. Each server records what reached it, the credential shown as
"<credential>" so that no test output holds it.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpcore
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from piper_mcp.broker.call import ApiRequest, ApiResponse, send
from piper_mcp.broker.rules import BEARER, ApiRule
from piper_mcp.local.server_thread import ServerThread, Site, Tls
from piper_mcp.network import bind, is_loopback_host

# Quote, backslash, slash, plus, equals and ampersand: its JSON, URL and base64 forms all differ.
CREDENTIAL = 'sk-canary-"broker"\\7f3a/9c+e=d&k-51b2c0ffee'
API_HOST = "api.example.test"
OTHER_HOST = "other.example.test"
# A public address standing in for the API server (see `StandIn`); never connected to.
PUBLIC_ADDRESS = "93.184.215.14"
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def echoed_credential(request: Request) -> str:
    """The credential as the API received it, in the header or the `key` query parameter."""
    authorization = request.headers.get("authorization", "")
    return authorization.removeprefix("Bearer ") or request.query_params.get("key", "")


def masked(text: str) -> str:
    return text.replace(quote(CREDENTIAL, safe=""), "<credential>").replace(
        CREDENTIAL, "<credential>"
    )


def record_of(request: Request) -> dict[str, Any]:
    return {
        "path": request.url.path,
        "query": masked(request.url.query),
        "authorization": masked(request.headers.get("authorization", "")) or None,
        "headers": {name: masked(value) for name, value in request.headers.items()},
    }


def api_app(records: list[dict[str, Any]], closing: threading.Event) -> Starlette:
    async def record(request: Request) -> None:
        records.append(record_of(request))

    async def echo(request: Request) -> Response:
        await record(request)
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "params": list(request.query_params.multi_items()),
                "headers": list(request.headers.items()),
                "body": (await request.body()).decode(),
            },
            headers={"Set-Cookie": "session=1", "X-RateLimit-Remaining": "41", "Server": "echo"},
        )

    async def needs_key(request: Request) -> Response:
        await record(request)
        if echoed_credential(request) != CREDENTIAL:
            return JSONResponse({"error": "missing or wrong key"}, status_code=401)
        return JSONResponse({"ok": True})

    async def echo_key(request: Request) -> Response:
        """Hands the credential back in its usual disguises, in the body and in headers."""
        await record(request)
        key = echoed_credential(request)
        codec = request.query_params.get("codec", "utf-8")
        body = "\n".join(
            [
                f"plain {key}",
                f"base64 {base64.b64encode(key.encode()).decode()}",
                f"urlsafe {base64.urlsafe_b64encode(key.encode()).decode().rstrip('=')}",
                f"quoted {quote(key, safe='')}",
                f"repr {key!r}",
                f"header {request.headers.get('authorization')}",
            ]
        )
        return Response(
            body.encode(codec),
            headers={
                "Content-Type": f"text/plain; charset={codec}",
                "X-Request-Id": key,
                "Link": f"<https://{API_HOST}/next?key={quote(key, safe='')}>; rel=next",
            },
        )

    async def key_at_end(request: Request) -> Response:
        """`pad` bytes of x, then the credential (plain or base64), then more."""
        await record(request)
        key = echoed_credential(request).encode()
        form = base64.b64encode(key) if request.query_params.get("form") == "base64" else key
        pad = int(request.query_params["pad"])
        return Response(b"x" * pad + form + b"y" * 100, media_type="text/plain")

    async def redirect(request: Request) -> Response:
        await record(request)
        status = int(request.query_params.get("status", "302"))
        return RedirectResponse(request.query_params["to"], status_code=status)

    async def chain(request: Request) -> Response:
        await record(request)
        left = int(request.query_params["left"])
        goal = f"/chain?left={left - 1}" if left else "/needs-key"
        return RedirectResponse(goal, status_code=307)

    async def endless(request: Request) -> Response:
        await record(request)

        async def chunks() -> AsyncIterator[bytes]:
            while not closing.is_set():  # until the client hangs up (Starlette cancels)
                yield b"z" * 65536
                # uvicorn's send returns at once once the client is gone: without a pause,
                # Starlette's watch for the disconnect would never get to run.
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def trickle(request: Request) -> Response:
        await record(request)

        async def drops() -> AsyncIterator[bytes]:
            for _ in range(400):
                if closing.is_set():
                    return
                yield b"."
                await asyncio.sleep(0.05)

        return StreamingResponse(drops(), media_type="text/plain")

    async def broken(request: Request) -> Response:
        """Starts a body and fails: the connection closes in the middle of it."""
        await record(request)

        async def half() -> AsyncIterator[bytes]:
            yield b"the start"
            raise RuntimeError("this API breaks off on purpose")

        return StreamingResponse(half(), media_type="text/plain")

    async def slow_headers(request: Request) -> Response:
        await record(request)
        for _ in range(400):
            if closing.is_set() or await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
        return Response("late")

    async def binary(request: Request) -> Response:
        """With `typed`, the media type names the key too, and so does the binary note."""
        await record(request)
        key = echoed_credential(request)
        typed = "typed" in request.query_params
        media_type = f"application/x-{key}" if typed else "application/octet-stream"
        return Response(key.encode(), media_type=media_type)

    async def compressed(request: Request) -> Response:
        await record(request)
        return Response(
            gzip.compress(echoed_credential(request).encode()),
            media_type="text/plain",
            headers={"Content-Encoding": "gzip"},
        )

    return Starlette(
        routes=[
            Route("/echo", echo, methods=ALL_METHODS),
            Route("/needs-key", needs_key, methods=ALL_METHODS),
            Route("/echo-key", echo_key),
            Route("/key-at-end", key_at_end),
            Route("/redirect", redirect, methods=ALL_METHODS),
            Route("/chain", chain),
            Route("/endless", endless),
            Route("/trickle", trickle),
            Route("/slow-headers", slow_headers),
            Route("/broken", broken),
            Route("/binary", binary),
            Route("/compressed", compressed),
        ]
    )


def other_app(records: list[dict[str, Any]]) -> Starlette:
    async def anything(request: Request) -> Response:
        records.append(record_of(request))
        return Response("the other host")

    return Starlette(routes=[Route("/{path:path}", anything, methods=ALL_METHODS)])


async def resolve(host: str, port: int) -> list[str]:
    """The test's DNS: the two test names are on loopback, nothing else resolves."""
    if host in (API_HOST, OTHER_HOST):
        return ["127.0.0.1"]
    raise OSError(f"{host} does not resolve in these tests")


class StandIn(httpcore.AsyncNetworkBackend):
    """Opens loopback sockets only, remembering every address asked for.

    `stand_ins` maps a public address to 127.0.0.1, so a test can play "the API is at a
    public address" without any traffic leaving the machine.
    """

    def __init__(self, stand_ins: dict[str, str] | None = None) -> None:
        self.asked: list[str] = []
        self._stand_ins = stand_ins or {}
        self._sockets = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        target = self._stand_ins.get(host, host)
        if not is_loopback_host(target):
            raise httpcore.ConnectError(f"the tests connect to loopback only, not {target}")
        return await self._sockets.connect_tcp(target, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._sockets.sleep(seconds)


def sequence_resolver(
    *answers: list[str],
) -> tuple[Callable[[str, int], Awaitable[list[str]]], list[str]]:
    """A resolver giving `answers` in turn (the last one from then on), and its call log."""
    asked: list[str] = []

    async def answer(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return answer, asked


@dataclass
class Servers:
    """The API server and the other one, as the tests reach them."""

    api_port: int
    other_port: int
    ca_file: Path
    ssl_context: ssl.SSLContext
    api_requests: list[dict[str, Any]] = field(default_factory=list)
    other_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{API_HOST}:{self.api_port}"

    @property
    def other(self) -> str:
        return f"{OTHER_HOST}:{self.other_port}"

    def url(self, path: str) -> str:
        return f"https://{self.api}{path}"

    def rule(self, **fields: Any) -> ApiRule:
        """A rule for the API server; private addresses allowed, since it is on loopback."""
        fields.setdefault("hosts", (self.api,))
        fields.setdefault("inject", BEARER)
        fields.setdefault("allow_private", True)
        return ApiRule(**fields)

    async def call(
        self,
        target: str,
        *,
        rule: ApiRule | None = None,
        credential: str = CREDENTIAL,
        **request: Any,
    ) -> ApiResponse:
        """`send` to `target`, a path on the API server or a whole URL."""
        request.setdefault("method", "GET")
        return await send(
            rule or self.rule(),
            credential,
            ApiRequest(url=target if "://" in target else self.url(target), **request),
            ssl_context=self.ssl_context,
            resolve=resolve,
        )


@pytest.fixture(scope="session")
def running_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("broker-tls")
    authority = trustme.CA()
    served = folder / "server.pem"
    authority.issue_cert(
        API_HOST, OTHER_HOST, "localhost", "127.0.0.1"
    ).private_key_and_cert_chain_pem.write_to_path(str(served))
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    closing = threading.Event()
    api_requests: list[dict[str, Any]] = []
    other_requests: list[dict[str, Any]] = []
    tls = Tls(served, served)
    api_socket, other_socket = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    thread = ServerThread(
        [
            Site(api_app(api_requests, closing), api_socket, tls),
            Site(other_app(other_requests), other_socket, tls),
        ]
    )
    thread.start()
    try:
        yield Servers(
            api_port=api_socket.getsockname()[1],
            other_port=other_socket.getsockname()[1],
            ca_file=ca_file,
            ssl_context=context,
            api_requests=api_requests,
            other_requests=other_requests,
        )
    finally:
        closing.set()
        thread.stop()


@pytest.fixture
def servers(running_servers: Servers) -> Servers:
    """The running servers, with what reached them so far forgotten."""
    running_servers.api_requests.clear()
    running_servers.other_requests.clear()
    return running_servers


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
