"""Issue 9.11: one answer from the user releases one value, only where it was given.

In the 2026-07-28 era the server asks with an `input_required` result and a
sealed request state; the client retries the call with the user's answer and
that state. The attacker here speaks raw JSON-RPC, one POST per call as the era
has it, and sends a retry it has seen once more: the same client, another
client, many copies at once, for another variable, and into a restarted server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import ElicitRequestParams, ElicitResult, Implementation

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.network import bind, url_of
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.consent_ledger import ConsentLedger
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, OPENAI_VALUE
from tests.protocol.conftest import DECLARED, structured

pytestmark = pytest.mark.anyio

# Served from the environment fallback for the declared, ungranted `slack_token`.
CANARY = 'xoxb-"consent"\\replay\nkey-é✓'
VARIABLE = {"variable": "slack_token", "mode": "value"}
YES: dict[str, Any] = {}  # accepting the question is the yes (issue 12.9)
VICTIM = {"name": "victim-host", "version": "1.0"}
ATTACKER = {"name": "attacker-host", "version": "6.6"}


def leaks(text: str, value: str) -> bool:
    """The value in a response body, raw or JSON-escaped."""
    return value in text or json.dumps(value)[1:-1] in text


class Wire:
    """One client speaking 2026-07-28 JSON-RPC over streamable HTTP: a POST per call."""

    def __init__(self, http: httpx.AsyncClient, client_info: dict[str, str]) -> None:
        self.http = http
        self.client_info = client_info
        self.bodies: list[str] = []

    async def call(
        self,
        arguments: dict[str, str],
        *,
        answer: dict[str, Any] | None = None,
        state: str | None = None,
        asked: str | None = None,
    ) -> dict[str, Any]:
        """A `get_secret` call; with `answer`, the retry answering question `asked`."""
        params: dict[str, Any] = {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
                "io.modelcontextprotocol/clientInfo": self.client_info,
            },
            "name": "get_secret",
            "arguments": arguments,
        }
        if answer is not None:
            assert asked is not None
            params["inputResponses"] = {asked: {"action": "accept", "content": answer}}
        if state is not None:
            params["requestState"] = state
        response = await self.http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
            headers={
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/call",
                "Mcp-Name": "get_secret",
            },
        )
        self.bodies.append(response.text)
        message: dict[str, Any] = response.json()
        return message

    async def ask(self, arguments: dict[str, str] = VARIABLE) -> Question:
        message = await self.call(arguments)
        result = message["result"]
        assert result["resultType"] == "input_required", message
        [(key, request)] = result["inputRequests"].items()
        return Question(key, request["params"]["message"], result["requestState"], arguments)


class Question:
    """What the server asked, and the state a retry must bring back."""

    def __init__(self, key: str, message: str, state: str, arguments: dict[str, str]) -> None:
        self.key, self.message, self.state, self.arguments = key, message, state, arguments

    async def answer(
        self, wire: Wire, answer: dict[str, Any] = YES, arguments: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return await wire.call(
            arguments or self.arguments, answer=answer, state=self.state, asked=self.key
        )


def released(message: dict[str, Any]) -> str | None:
    """The value a response released, if any."""
    result = message.get("result") or {}
    if result.get("isError") or result.get("resultType") != "complete":
        return None
    value: str | None = result["structuredContent"]["value"]
    return value


def refusal(message: dict[str, Any]) -> str:
    result = message["result"]
    assert result.get("isError") is True, message
    return "\n".join(block["text"] for block in result["content"])


@pytest.fixture
def audit(tmp_path: Path) -> AuditTrail:
    return AuditTrail(tmp_path / "audit.jsonl")


@pytest.fixture
def new_server(
    piper: LocalBackend, audit: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], MCPServer]:
    """Builds a piper-mcp server that asks the user; each one is a fresh process's worth."""
    monkeypatch.setenv("SLACK_TOKEN", CANARY)

    def build() -> MCPServer:
        client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
        service = CredentialService(client, lambda: list(DECLARED), policy=RevealPolicy("ask"))
        return build_server(service, audit=audit, transport="streamable-http")

    return build


@asynccontextmanager
async def speaking_2026(server: MCPServer) -> AsyncIterator[httpx.AsyncClient]:
    """The server's streamable HTTP app, in-process, as `piper-mcp serve` mounts it."""
    app = server.streamable_http_app()
    transport = httpx.ASGITransport(app=app)
    async with (
        server.session_manager.run(),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        yield http


@pytest.fixture
async def http(new_server: Callable[[], MCPServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with speaking_2026(new_server()) as client:
        yield client


@pytest.mark.parametrize("replayer", [VICTIM, ATTACKER], ids=["same-client", "other-client"])
async def test_a_replayed_answer_is_refused_without_the_value(
    http: httpx.AsyncClient, audit: AuditTrail, replayer: dict[str, str]
) -> None:
    victim, attacker = Wire(http, VICTIM), Wire(http, replayer)
    question = await victim.ask()
    assert "'slack_token'" in question.message
    assert released(await question.answer(victim)) == CANARY

    replay = await question.answer(attacker)

    assert "already used" in refusal(replay)
    assert "get_secret again" in refusal(replay)
    assert not any(leaks(body, CANARY) for body in attacker.bodies)
    # The user is asked again, with a question of its own, and can say yes again.
    again = await victim.ask()
    assert again.message != question.message
    assert released(await again.answer(victim)) == CANARY
    assert [(e["outcome"], e["consent_given"]) for e in audit.recent()] == [
        ("ok", True),
        ("refused", None),
        ("ok", True),
    ]
    assert audit.recent()[1]["reason"] == "consent_spent"


async def test_copies_of_one_retry_sent_at_once_release_one_value(http: httpx.AsyncClient) -> None:
    victim = Wire(http, VICTIM)
    question = await victim.ask()

    answers = await asyncio.gather(*(question.answer(Wire(http, VICTIM)) for _ in range(8)))

    assert [released(a) for a in answers].count(CANARY) == 1
    assert sum("already used" in refusal(a) for a in answers if released(a) is None) == 7


async def test_an_answer_given_with_remember_is_not_replayable_either(
    http: httpx.AsyncClient,
) -> None:
    """The 2026-07-28 era has no session: "remember" covers the call it answered, nothing more."""
    victim = Wire(http, VICTIM)
    question = await victim.ask()
    assert released(await question.answer(victim, {"remember": True})) == CANARY

    replay = await question.answer(victim, {"remember": True})
    later = await victim.call(VARIABLE)

    assert "already used" in refusal(replay)
    assert later["result"]["resultType"] == "input_required"  # asked again
    assert not leaks(victim.bodies[-1] + victim.bodies[-2], CANARY)


async def test_an_answer_for_one_variable_does_not_release_another(
    http: httpx.AsyncClient,
) -> None:
    attacker = Wire(http, ATTACKER)
    question = await attacker.ask()  # about slack_token
    other = {"variable": "OpenAI API Key", "mode": "value"}

    with_state = await question.answer(attacker, arguments=other)
    without_state = await attacker.call(other, answer=YES, asked=question.key)

    # The SDK binds the sealed state to the tool arguments it was minted for.
    assert with_state["error"]["message"] == "Invalid or expired requestState"
    # An answer with no question recorded for it is not taken: the user is asked.
    assert without_state["result"]["resultType"] == "input_required"
    assert (
        "'OpenAI API Key'"
        in without_state["result"]["inputRequests"][question.key]["params"]["message"]
    )
    assert not any(leaks(body, OPENAI_VALUE) for body in attacker.bodies)
    # The question about slack_token was not spent by the attempts on another variable.
    assert released(await question.answer(attacker)) == CANARY


async def test_an_answer_does_not_outlive_the_server_that_asked(
    new_server: Callable[[], MCPServer],
) -> None:
    async with speaking_2026(new_server()) as first:
        question = await Wire(first, VICTIM).ask()
    async with speaking_2026(new_server()) as restarted:
        wire = Wire(restarted, VICTIM)
        replay = await question.answer(wire)
    # The sealed state is keyed to the process that minted it.
    assert replay["error"]["message"] == "Invalid or expired requestState"
    assert not any(leaks(body, CANARY) for body in wire.bodies)


class User:
    """Says yes (and "remember") to every question, and counts them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, context: object, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"remember": True})


async def test_remember_in_the_handshake_era_covers_that_variable_on_that_connection(
    new_server: Callable[[], MCPServer],
) -> None:
    server = new_server()
    first_user, second_user = User(), User()
    reveal = {"variable": "OpenAI API Key", "mode": "value"}
    async with (
        Client(server, mode="legacy", elicitation_callback=first_user) as first,  # type: ignore[arg-type]
        Client(server, mode="legacy", elicitation_callback=second_user) as second,  # type: ignore[arg-type]
    ):
        asked = structured(await first.call_tool("get_secret", reveal))
        remembered = structured(await first.call_tool("get_secret", reveal))
        other_variable = structured(await first.call_tool("get_secret", VARIABLE))
        other_connection = structured(await second.call_tool("get_secret", reveal))

    assert (asked["consent"], remembered["consent"]) == ("user_allowed", "remembered")
    assert other_variable["consent"] == "user_allowed"
    assert other_connection["consent"] == "user_allowed"
    assert [m.split("'")[1] for m in first_user.asked] == ["OpenAI API Key", "slack_token"]
    assert [m.split("'")[1] for m in second_user.asked] == ["OpenAI API Key"]


@contextmanager
def served_over_http(server: MCPServer) -> Iterator[str]:
    """The server's streamable HTTP app on a loopback port, with sessions, as `serve` runs it."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(server.streamable_http_app(), log_config=None, log_level="warning")
    face = uvicorn.Server(config)
    thread = threading.Thread(target=face.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not face.started:
            assert thread.is_alive(), "the HTTP face did not start"
            time.sleep(0.01)
        yield f"{url_of(sock)}/mcp"
    finally:
        face.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def test_remember_over_streamable_http_covers_one_http_session(
    new_server: Callable[[], MCPServer],
) -> None:
    """Another HTTP session of the same server, the same client's included, is asked again."""
    first_user, second_user = User(), User()
    with served_over_http(new_server()) as url:
        async with Client(url, mode="legacy", elicitation_callback=first_user) as first:  # type: ignore[arg-type]
            asked = structured(await first.call_tool("get_secret", VARIABLE))
            remembered = structured(await first.call_tool("get_secret", VARIABLE))
            async with Client(url, mode="legacy", elicitation_callback=second_user) as second:  # type: ignore[arg-type]
                other_session = structured(await second.call_tool("get_secret", VARIABLE))

    assert [asked["value"], remembered["value"], other_session["value"]] == [CANARY] * 3
    assert (asked["consent"], remembered["consent"]) == ("user_allowed", "remembered")
    assert other_session["consent"] == "user_allowed"
    assert (len(first_user.asked), len(second_user.asked)) == (1, 1)


async def test_a_2026_call_that_names_a_remembering_client_is_still_asked(
    new_server: Callable[[], MCPServer],
) -> None:
    """What a handshake-era session remembers is tied to that session, not to a client's name.

    The attacker speaks 2026-07-28 to the same server and claims the victim's client info.
    """
    server = new_server()
    victim_user = User()
    async with (
        Client(
            server,
            mode="legacy",
            elicitation_callback=victim_user,  # type: ignore[arg-type]
            client_info=Implementation(**VICTIM),
        ) as victim,
        speaking_2026(server) as http,
    ):
        asked = structured(await victim.call_tool("get_secret", VARIABLE))
        remembered = structured(await victim.call_tool("get_secret", VARIABLE))
        attacker = Wire(http, VICTIM)
        question = await attacker.ask()

    assert (asked["consent"], remembered["consent"]) == ("user_allowed", "remembered")
    assert len(victim_user.asked) == 1
    assert "victim-host 1.0" in question.message  # asked, under the name it gave
    assert not any(leaks(body, CANARY) for body in attacker.bodies)


def test_a_spent_state_the_ledger_forgot_still_answers_no_question() -> None:
    """A spent state forgotten (past its lifetime, or pushed out by a flood) is not revived.

    Its question's code has moved on, so the answer it carries matches nothing asked.
    """
    now = [0.0]
    ledger = ConsentLedger(lifetime=600.0, capacity=2, clock=lambda: now[0])
    first = ledger.question_code("slack_token", None)

    assert ledger.question_code("slack_token", "state-1") == first  # the retry answers it
    assert ledger.question_code("slack_token", "state-1") is None  # refused by name
    now[0] = 601.0
    forgotten = ledger.question_code("slack_token", "state-1")
    for flood in ("state-2", "state-3", "state-4"):
        ledger.question_code("slack_token", flood)
    pushed_out = ledger.question_code("slack_token", "state-2")

    assert None not in (forgotten, pushed_out)
    assert first not in (forgotten, pushed_out)
    assert ledger.question_code("slack_token", None) not in (first, forgotten, pushed_out)
