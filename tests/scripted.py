"""A Piper backend that answers whatever a test scripts, and records what it was sent.

For the answers the real local backend never gives (5xx, malformed bodies,
an agent token that is always rejected, a slow or broken Piper Link).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Scripted:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class ScriptedPiper:
    """`answers[path]` is a list used in order, its last entry repeating."""

    answers: dict[str, list[Scripted]] = field(default_factory=dict)
    requests: dict[str, list[Recorded]] = field(default_factory=lambda: defaultdict(list))

    def script(self, path: str, *answers: Scripted) -> None:
        self.answers[path] = list(answers)

    @property
    def asgi(self) -> Starlette:
        async def answer(request: Request) -> Response:
            path = request.url.path
            self.requests[path].append(Recorded(dict(request.headers), await request.body()))
            queue = self.answers.get(path) or [Scripted(404, b'{"error": "not_scripted"}')]
            scripted = queue.pop(0) if len(queue) > 1 else queue[0]
            if scripted.delay:
                # Late, or never if the client hangs up first (nobody would read it).
                with anyio.move_on_after(scripted.delay):
                    while (await request.receive())["type"] != "http.disconnect":
                        pass
            return Response(
                scripted.body,
                status_code=scripted.status,
                media_type=scripted.content_type,
                headers=scripted.headers,
            )

        return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


def json_answer(status: int, text: str) -> Scripted:
    return Scripted(status, text.encode())


@dataclass
class HeaderRecorder:
    """Wraps an ASGI app and records each HTTP request's path and headers."""

    app: object
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] == "http":
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            self.seen.append((scope["path"], headers))
        await self.app(scope, receive, send)  # type: ignore[operator]
