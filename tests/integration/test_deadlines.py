"""PIPER_RETRY_DEADLINE is a wall-clock deadline (issue 10, item 1).

A fault layer sits on loopback in front of the real local backend and makes
one route answer slowly, hang, or trickle its body a byte every 100 ms.
Whatever it does, a call (a tool call with its explanation, a Secret Manager
read, the blocking client) answers within the deadline plus a margin, and
concurrent failing calls share their requests instead of multiplying them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp import Client

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient, PiperBackendError, PiperClient
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, OPENAI_VALUE
from tests.protocol.conftest import DECLARED, make_server, structured, text_of

DEADLINE = 0.5
BOUND = DEADLINE * 2 + 1  # generous: the deadline plus scheduling on a busy machine
RESOLVE = "/piper-resolve-variable-mapping"
SECRET_MANAGER = "/v1/"
SAID = f"did not answer within PIPER_RETRY_DEADLINE={DEADLINE:g}s"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer_late(scope: dict[str, Any], receive: Receive, send: Send, app: Any) -> None:
    """The real answer, after four deadlines (the issue's backend took 15-40 s for 10 s).

    Unless the client hangs up first: nobody would read it.
    """
    with anyio.move_on_after(DEADLINE * 4) as waiting:
        while (await receive())["type"] != "http.disconnect":
            pass
    if waiting.cancelled_caught:
        await app(scope, receive, send)


async def hang(scope: dict[str, Any], receive: Receive, send: Send, app: Any) -> None:
    """Never answer; stop when the client hangs up."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def trickle(scope: dict[str, Any], receive: Receive, send: Send, app: Any) -> None:
    """A valid answer, one byte every 100 ms (15 s in all), until the client hangs up."""
    body = b'{"credentialId": "cred-slow"}' + b" " * 120
    gone = anyio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for byte in body:
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
            await anyio.sleep(0.1)
        group.cancel_scope.cancel()


Fault = Callable[[dict[str, Any], Receive, Send, Any], Awaitable[None]]
FAULTS = {"slow": answer_late, "hang": hang, "trickle": trickle}


@dataclass
class FaultLayer:
    """ASGI: `fault` answers requests whose path starts with `path`; every request counted."""

    app: Any
    path: str = RESOLVE
    fault: Fault | None = None
    seen: Counter[str] = field(default_factory=Counter)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen[scope["path"]] += 1
            if self.fault is not None and scope["path"].startswith(self.path):
                await self.fault(scope, receive, send, self.app)
                return
        await self.app(scope, receive, send)


@pytest.fixture
def faults(piper: LocalBackend) -> FaultLayer:
    return FaultLayer(piper.app.asgi)


@pytest.fixture
def settings(
    piper: LocalBackend,
    faults: FaultLayer,
    serve: Callable[[object], str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Client arguments for the research agent (v2), every backend URL through the faults."""
    monkeypatch.setenv("PIPER_RETRY_DEADLINE", str(DEADLINE))
    front = serve(faults)
    return {
        key: value.replace(piper.base_url, front) if isinstance(value, str) else value
        for key, value in piper.client_settings().items()
    }


@pytest.fixture
def clock() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    yield lambda: time.monotonic() - started


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_tool_call_answers_within_the_deadline_whatever_the_backend_does(
    settings: dict[str, Any], faults: FaultLayer, fault: str, clock: Callable[[], float]
) -> None:
    """The explanation of a failure included: it asks Piper nothing more."""
    faults.fault = FAULTS[fault]
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        async with Client(make_server(client), mode="legacy") as mcp:
            result = await mcp.call_tool("get_secret", {"variable": "database_url"})
    assert clock() < BOUND
    assert result.is_error is True
    assert SAID in text_of(result)
    assert "raise PIPER_RETRY_DEADLINE" in text_of(result)  # what to do about it
    assert faults.seen[RESOLVE] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["ask", "allow"])
async def test_a_raw_value_call_asks_piper_once_within_one_deadline(
    settings: dict[str, Any], faults: FaultLayer, policy: str, clock: Callable[[], float]
) -> None:
    """mode='value': the consent step's lookup is the call's only request, not one of two.

    Under `ask`, the question is prepared by asking Piper where the value is; when
    Piper hangs, the refusal explains with that answer instead of asking again.
    """
    faults.fault = hang
    async with AsyncPiperClient(AGENT_ID, enable_env_fallback=False, **settings) as client:
        server = make_server(client, RevealPolicy(policy))
        async with Client(server, mode="legacy") as mcp:
            arguments = {"variable": "database_url", "mode": "value"}
            result = await mcp.call_tool("get_secret", arguments)
    assert clock() < BOUND
    assert result.is_error is True
    assert SAID in text_of(result)
    assert faults.seen[RESOLVE] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["hang", "trickle"])
async def test_fifty_concurrent_failing_calls_are_all_answered_and_share_their_requests(
    settings: dict[str, Any], faults: FaultLayer, fault: str, clock: Callable[[], float]
) -> None:
    """The issue saw 100 of 150 such calls unanswered after 3 minutes."""
    faults.fault = FAULTS[fault]
    answered: list[float] = []
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        async with Client(make_server(client), mode="legacy") as mcp:

            async def call() -> None:
                result = await mcp.call_tool("get_secret", {"variable": "database_url"})
                assert SAID in text_of(result)
                answered.append(clock())

            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(call)
    assert len(answered) == 50
    assert max(answered) < BOUND
    assert faults.seen[RESOLVE] == 1  # one shared round trip, no explanation requests


@pytest.mark.anyio
async def test_listing_variables_answers_within_the_deadline_and_shares_each_resolve(
    settings: dict[str, Any], faults: FaultLayer, clock: Callable[[], float]
) -> None:
    faults.fault = hang
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        async with Client(make_server(client), mode="legacy") as mcp:
            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(mcp.call_tool, "list_variables", {})
            report = structured(await mcp.call_tool("list_variables", {}))
    assert clock() < BOUND * 2  # two rounds of calls, one after the other
    assert [v["variable"] for v in report["variables"]] == DECLARED
    assert all(SAID in v["piper_problem"] for v in report["variables"])
    assert faults.seen[RESOLVE] == len(DECLARED) * 2  # one per variable per round


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["hang", "trickle"])
async def test_a_secret_manager_read_ends_at_the_deadline(
    settings: dict[str, Any], faults: FaultLayer, fault: str
) -> None:
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        issued = await client.get_secret("OpenAI API Key")
        assert await client.read_secret_value(issued) == OPENAI_VALUE
        faults.path, faults.fault = SECRET_MANAGER, FAULTS[fault]
        started = time.monotonic()
        with pytest.raises(PiperBackendError, match=f"Secret Manager {SAID}"):
            await client.read_secret_value(issued)
    assert time.monotonic() - started < BOUND


def test_the_blocking_client_answers_within_the_deadline(
    settings: dict[str, Any], faults: FaultLayer, clock: Callable[[], float]
) -> None:
    faults.fault = trickle
    with PiperClient(AGENT_ID, enable_env_fallback=False, **settings) as client:
        with pytest.raises(PiperBackendError, match=SAID):
            client.get_secret("database_url")
    assert clock() < BOUND


@pytest.mark.anyio
async def test_a_trickling_piper_link_is_given_up_after_its_timeout(
    piper: LocalBackend, serve: Callable[[object], str], clock: Callable[[], float]
) -> None:
    """check_link, next door: PIPER_LINK_TIMEOUT bounds the whole answer too."""
    link = FaultLayer(piper.app.asgi, path="/piper-link-context", fault=trickle)
    settings = {
        **piper.client_settings(),
        "piper_link_service_url": serve(link) + "/piper-link-context",
    }
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        async with Client(make_server(client), mode="legacy") as mcp:
            status = structured(await mcp.call_tool("check_link", {}))
    assert clock() < 1 * 2 + 1  # PIPER_LINK_TIMEOUT is 1 s
    assert status["problem"] == "no answer within 1 s"


@pytest.mark.anyio
async def test_concurrent_callers_sharing_a_failure_each_get_their_own_error(
    settings: dict[str, Any], faults: FaultLayer
) -> None:
    """Each error lists what its own fallback tiers tried, once."""
    faults.fault = hang
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        errors = await asyncio.gather(
            *(client.get_secret("slack_token") for _ in range(20)), return_exceptions=True
        )
    assert all(isinstance(error, PiperBackendError) for error in errors)
    assert {len(error.attempts) for error in errors} == {1}  # type: ignore[union-attr]
    assert faults.seen[RESOLVE] == 1
