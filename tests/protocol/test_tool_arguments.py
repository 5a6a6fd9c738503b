"""Issue 12.10: arguments that do not fit a tool get a tool error in piper-mcp's words.

What was wrong and what to send instead, for a model to correct its call: never
pydantic's report (its jargon, errors.pydantic.dev links, the input echoed whole).
Checked through an MCP client in both protocol eras, as raw JSON-RPC on the wire,
and with random JSON arguments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server.mcpserver import MCPServer

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, INSTANCE_ID, seeded_vault
from tests.protocol.conftest import make_server, structured, text_of

VARIABLE_NEEDED = (
    "get_secret needs `variable`: one of the agent's declared variable names (list_variables)."
)
NOT_A_STRING = (
    "get_secret: `variable` must be a string, one of the agent's declared variable names "
    "(list_variables), not {}."
)
MODE = "get_secret: `mode` must be 'token' or 'value', not {}."

BAD_ARGUMENTS = [
    ({}, VARIABLE_NEEDED),
    ({"mode": "value"}, VARIABLE_NEEDED),
    ({"variable": 42}, NOT_A_STRING.format("42")),
    ({"variable": None}, NOT_A_STRING.format("null")),
    ({"variable": True}, NOT_A_STRING.format("true")),
    ({"variable": ["database_url"]}, NOT_A_STRING.format("a list")),
    ({"variable": {"name": "database_url"}}, NOT_A_STRING.format("an object")),
    ({"variable": "database_url", "mode": "raw"}, MODE.format("'raw'")),
    ({"variable": "database_url", "mode": 1}, MODE.format("1")),
    ({"mode": "raw"}, f"{VARIABLE_NEEDED} {MODE.format(repr('raw'))}"),
]


def is_product_wording(text: str) -> bool:
    lowered = text.lower()
    return not any(
        word in lowered
        for word in ("pydantic", "validation error", "input_value", "traceback", "[type=")
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("arguments", "said"), BAD_ARGUMENTS, ids=lambda v: json.dumps(v)[:40])
async def test_a_bad_argument_says_what_to_send_instead(
    mcp: Client, arguments: dict[str, Any], said: str
) -> None:
    result = await mcp.call_tool("get_secret", arguments)
    assert result.is_error is True
    assert text_of(result) == said
    assert is_product_wording(text_of(result))
    still = structured(await mcp.call_tool("get_secret", {"variable": "database_url"}))
    assert still["source"] == "piper_sts"


HEADERS = (
    "call_api: `headers` must be an object of strings by name, extra request headers; never "
    "the one the credential goes in, not {}."
)
CALL = {"variable": "openai_api_key", "url": "https://api.openai.com/v1/models"}
BAD_CALL_ARGUMENTS = [
    ({**CALL, "headers": {"X-Trace": 1}}, HEADERS.format("1 (at 'X-Trace')")),
    ({**CALL, "headers": "X-Trace: 1"}, HEADERS.format("'X-Trace: 1'")),
    (
        {**CALL, "body": {"model": "x"}},
        "call_api: `body` must be a string, the request body, as text, not an object.",
    ),
    (
        {**CALL, "url": 5},
        "call_api: `url` must be a string, the https:// URL to call, on a host allowed for "
        "this variable, not 5.",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "said"), BAD_CALL_ARGUMENTS, ids=lambda v: json.dumps(v)[-40:]
)
async def test_a_bad_call_api_argument_says_what_to_send_instead(
    mcp: Client, arguments: dict[str, Any], said: str
) -> None:
    result = await mcp.call_tool("call_api", arguments)
    assert result.is_error is True
    assert text_of(result) == said
    assert is_product_wording(text_of(result))


@pytest.mark.anyio
async def test_a_long_or_unprintable_value_is_shown_short_and_escaped(mcp: Client) -> None:
    long = await mcp.call_tool("get_secret", {"variable": "slack_token", "mode": "v" * 10_000})
    escape = await mcp.call_tool("get_secret", {"variable": "x", "mode": "\x1b[2Jvalue\n"})
    assert long.is_error is True and escape.is_error is True
    assert len(text_of(long)) < 200
    assert text_of(escape) == MODE.format("'\\x1b[2Jvalue\\n'")


@pytest.mark.anyio
async def test_arguments_a_tool_does_not_take_are_ignored(mcp: Client) -> None:
    """The schemas allow them, and some hosts send a placeholder to tools without arguments."""
    token = await mcp.call_tool("get_secret", {"variable": "database_url", "reveal": True})
    assert structured(token)["source"] == "piper_sts"
    for tool in ("list_variables", "check_link"):
        structured(await mcp.call_tool(tool, {"random_string": "x"}))


# -- the same on the wire, as raw JSON-RPC over streamable HTTP ------------------------------

ACCEPT = {"Accept": "application/json, text/event-stream"}


@asynccontextmanager
async def over_http(server: MCPServer) -> AsyncIterator[httpx.AsyncClient]:
    app = server.streamable_http_app(json_response=True)
    async with (
        server.session_manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        yield http


async def call_in_a_session(http: httpx.AsyncClient, arguments: dict[str, Any]) -> str:
    """`tools/call` after `initialize`, as a 2025-11-25 client sends it."""
    opened = await http.post(
        "/mcp",
        headers=ACCEPT,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "wire", "version": "1"},
            },
        },
    )
    session = {
        **ACCEPT,
        "Mcp-Session-Id": opened.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post("/mcp", headers=session, json=initialized)
    call = {"name": "get_secret", "arguments": arguments}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    return (await http.post("/mcp", headers=session, json=body)).text


async def call_alone(http: httpx.AsyncClient, arguments: dict[str, Any]) -> str:
    """`tools/call` as one self-contained 2026-07-28 request."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "wire", "version": "1"},
    }
    call = {"_meta": meta, "name": "get_secret", "arguments": arguments}
    headers = {
        **ACCEPT,
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "get_secret",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    return (await http.post("/mcp", headers=headers, json=body)).text


@pytest.mark.anyio
@pytest.mark.parametrize("send", [call_in_a_session, call_alone], ids=["2025-11-25", "2026-07-28"])
async def test_on_the_wire_a_bad_argument_is_a_tool_error_in_product_words(
    piper_client: AsyncPiperClient, send: Any
) -> None:
    async with over_http(make_server(piper_client)) as http:
        body = await send(http, {"variable": "database_url", "mode": "raw"})
    message = json.loads(body)
    assert message["result"]["isError"] is True
    assert message["result"]["content"] == [{"type": "text", "text": MODE.format("'raw'")}]
    assert is_product_wording(body)


# -- random JSON arguments ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
argument_objects = st.dictionaries(
    st.sampled_from(["variable", "mode"]) | st.text(max_size=12), json_values, max_size=3
)


@pytest.fixture(scope="module", params=["legacy", "auto"])
def arguments_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BlockingPortal, Client]]:
    """One server per era for the whole module, driven from sync hypothesis tests."""
    home = tmp_path_factory.mktemp("arguments") / "vault"
    with (
        LocalBackend(seeded_vault(home), instance_id=INSTANCE_ID) as piper,
        start_blocking_portal() as portal,
    ):
        client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
        mcp = Client(make_server(client, RevealPolicy("deny")), mode=request.param)
        with portal.wrap_async_context_manager(mcp) as connected:
            yield portal, connected


def test_random_json_arguments_never_get_pydantic_text_or_a_crash(
    arguments_client: tuple[BlockingPortal, Client],
) -> None:
    portal, mcp = arguments_client

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(arguments=argument_objects)
    def run(arguments: dict[str, Any]) -> None:
        result = portal.call(mcp.call_tool, "get_secret", arguments)
        text = text_of(result)
        assert is_product_wording(text), text
        if result.is_error:
            # The SDK's text for a crash names only the tool; every refusal says why.
            assert text.strip() not in ("", "Error executing tool get_secret"), arguments

    run()
