"""The reveal policy and consent: a raw value leaves only as the operator and the user allow.

SECURITY.md rule 2 (raw values only through the reveal policy) and rule 4 (no
reading the server's own environment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, OPENAI_VALUE
from tests.protocol.conftest import make_server, structured, text_of, wire

pytestmark = pytest.mark.anyio


class User:
    """Answers elicitations like a person at the host would, and remembers being asked."""

    def __init__(self, action: str = "accept", content: dict[str, Any] | None = None) -> None:
        self.action = action
        self.content = content if content is not None else {}
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: object, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if self.action != "accept":
            return ElicitResult(action=self.action)  # type: ignore[arg-type]
        return ElicitResult(action="accept", content=self.content)


@pytest.fixture
def connect(piper: LocalBackend, era: str) -> Callable[..., Any]:
    """`async with connect(policy, user) as mcp`: a client whose user answers questions."""

    def open_client(
        policy: RevealPolicy | None = None, user: User | None = None, transport: str = "stdio"
    ) -> Client:
        client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
        return Client(
            make_server(client, policy, transport=transport),
            mode=era,  # type: ignore[arg-type]
            elicitation_callback=user,  # type: ignore[arg-type]
        )

    return open_client


async def reveal(mcp: Client, variable: str = "OpenAI API Key") -> Any:
    return await mcp.call_tool("get_secret", {"variable": variable, "mode": "value"})


async def test_ask_puts_the_question_to_the_user_and_reveals_on_yes(
    connect: Callable[..., Client], era: str
) -> None:
    user = User()
    async with connect(RevealPolicy("ask"), user) as mcp:
        data = structured(await reveal(mcp))
    assert data["value"] == OPENAI_VALUE
    assert (data["source"], data["consent"], data["token"]) == (
        "piper_raw_secret",
        "user_allowed",
        None,
    )
    [question] = user.asked
    assert "'OpenAI API Key'" in question.message
    assert "from Piper (raw secret exchange)" in question.message
    assert "mcp" in question.message.lower()  # the requesting client's name
    schema = question.requested_schema
    fields = {name: prop["type"] for name, prop in schema["properties"].items()}
    # Issue 12.9: accepting is the yes, so nothing asks to be confirmed a second time. Never
    # a field to type a secret into; "remember" (optional) only where there is a session
    # or, over stdio, the one client the server has in either era.
    assert not schema.get("required")
    assert fields == {"remember": "boolean"}
    assert schema["properties"]["remember"]["default"] is False
    assert "Accept to reveal it" in question.message


async def test_over_http_the_2026_era_offers_nothing_to_remember(
    connect: Callable[..., Client], era: str
) -> None:
    user = User()
    async with connect(RevealPolicy("ask"), user, transport="streamable-http") as mcp:
        await reveal(mcp)
    [question] = user.asked
    fields = set(question.requested_schema["properties"])
    assert fields == ({"remember"} if era == "legacy" else set())  # a session, or nothing


@pytest.mark.parametrize(
    ("user", "says"),
    [
        (User("decline"), "declined"),
        (User("cancel"), "dismissed"),
    ],
)
async def test_no_decline_or_cancel_reveals_nothing(
    connect: Callable[..., Client], user: User, says: str
) -> None:
    async with connect(RevealPolicy("ask"), user) as mcp:
        result = await reveal(mcp)
        after = structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
    assert result.is_error is True
    assert says in text_of(result)
    assert OPENAI_VALUE not in str(wire(result))
    assert after["source"] == "piper_sts"  # the server keeps serving tokens


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_remembering_for_the_session_stops_asking_for_that_variable(
    connect: Callable[..., Client], era: str, transport: str
) -> None:
    user = User(content={"remember": True})
    async with connect(RevealPolicy("ask"), user, transport) as mcp:
        first = structured(await reveal(mcp))
        second = await reveal(mcp)
        other = await reveal(mcp, "database_url")
    assert first["consent"] == "user_allowed"
    if era == "legacy" or transport == "stdio":  # a session, or stdio's one client
        assert structured(second)["consent"] == "remembered"
        assert len(user.asked) == 2  # once for the OpenAI key, once for database_url
    else:
        # The 2026-07-28 era over HTTP has nothing to remember in: each call asks again.
        assert structured(second)["consent"] == "user_allowed"
        assert len(user.asked) == 3
    assert structured(other)["variable"] == "database_url"
    assert structured(other)["consent"] == "user_allowed"  # remembered for the key asked only


async def test_accepting_without_remember_reveals_once_and_asks_again_next_time(
    connect: Callable[..., Client],
) -> None:
    """Issue 12.9: an empty accepted form is the yes, for this call only."""
    user = User(content={})
    async with connect(RevealPolicy("ask"), user) as mcp:
        first = structured(await reveal(mcp))
        second = structured(await reveal(mcp))
    assert (first["value"], first["consent"]) == (OPENAI_VALUE, "user_allowed")
    assert (second["value"], second["consent"]) == (OPENAI_VALUE, "user_allowed")
    assert len(user.asked) == 2


async def test_deny_gives_tokens_only_and_never_asks(connect: Callable[..., Client]) -> None:
    user = User()
    async with connect(RevealPolicy("deny"), user) as mcp:
        result = await reveal(mcp)
        token = structured(await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"}))
    assert result.is_error is True
    assert "denied by the operator's reveal policy" in text_of(result)
    assert OPENAI_VALUE not in str(wire(result))
    assert user.asked == []
    assert token["source"] == "piper_sts"


async def test_allow_reveals_without_asking(connect: Callable[..., Client]) -> None:
    user = User()
    async with connect(RevealPolicy("allow"), user) as mcp:
        data = structured(await reveal(mcp))
    assert (data["value"], data["consent"]) == (OPENAI_VALUE, "operator_allowed")
    assert user.asked == []


async def test_a_per_variable_override_wins(connect: Callable[..., Client]) -> None:
    policy = RevealPolicy("deny", {"openai-api-key": "allow"})
    async with connect(policy) as mcp:
        allowed = structured(await reveal(mcp))
        denied = await reveal(mcp, "database_url")
    assert allowed["value"] == OPENAI_VALUE
    assert denied.is_error is True


async def test_an_environment_fallback_is_revealed_with_its_name(
    connect: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-canary-allowed")
    user = User()
    async with connect(RevealPolicy("ask"), user) as mcp:
        data = structured(await reveal(mcp, "slack_token"))
    assert (data["source"], data["value"], data["env_var_name"]) == (
        "environment_variable",
        "xoxb-canary-allowed",
        "SLACK_TOKEN",
    )
    assert "from the environment variable SLACK_TOKEN" in user.asked[0].message


async def test_nothing_to_reveal_asks_no_reveal_question_only_where_to_grant(
    connect: Callable[..., Client],
) -> None:
    user = User(action="decline")
    async with connect(RevealPolicy("ask"), user) as mcp:
        result = await reveal(mcp, "slack_token")
    assert result.is_error is True
    assert "has not granted this agent" in text_of(result)
    assert [question.mode for question in user.asked] == ["url"]  # the grant page, no form


async def test_a_declared_name_that_maps_to_a_piper_setting_is_never_read_from_the_environment(
    piper: LocalBackend, monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    """Even if the operator declares it, PIPER_* is the server's own configuration."""
    monkeypatch.setenv("PIPER_CLIENT_SECRET", "canary-own-setting-0123456789abcdef")
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
    server = make_server(client, RevealPolicy("allow"), declared=["Piper Client Secret"])
    async with Client(server, mode=era) as mcp:  # type: ignore[arg-type]
        result = await reveal(mcp, "Piper Client Secret")
        listed = structured(await mcp.call_tool("list_variables", {}))
    assert result.is_error is True
    assert "canary-own-setting-0123456789abcdef" not in str(wire(result)) + str(listed)
    assert listed["variables"][0]["source"] == "missing"
