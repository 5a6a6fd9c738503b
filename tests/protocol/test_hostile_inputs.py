"""What a prompt-injected model might send: a tool error, no value, and the server keeps serving."""

from __future__ import annotations

import json
import os

import pytest
from mcp import Client

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, AGENT_SECRET, DB_VALUE, OPENAI_VALUE
from tests.protocol.conftest import make_server, structured, text_of, wire

pytestmark = pytest.mark.anyio

HOSTILE = [
    "PIPER_CLIENT_SECRET",
    "piper_client_secret",
    "Piper-Client-Secret",
    "ＰＩＰＥＲ_ＣＬＩＥＮＴ_ＳＥＣＲＥＴ",  # full-width
    "PATH",
    "path",
    "HOME",
    "AWS_SECRET_ACCESS_KEY",
    "../../etc/passwd",
    "x" * 10_000,
    "openai\x00api key",
    "slack_token\n\rdatabase_url",
    '{"variable": "database_url"}',
    "database_url; mode=value",
    "",
    "   ",
    "ＯｐｅｎＡＩ ＡＰＩ Ｋｅｙ",  # full-width look-alike
]


@pytest.mark.parametrize("variable", HOSTILE, ids=lambda v: repr(v[:20]))
async def test_undeclared_or_malformed_names_are_refused_without_a_value(
    mcp: Client, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET", AGENT_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-canary-secret")
    result = await mcp.call_tool("get_secret", {"variable": variable})
    assert result.is_error is True
    text = text_of(result)
    assert "not a variable this agent declares" in text
    seen = json.dumps(wire(result))
    for canary in (AGENT_SECRET, "aws-canary-secret", os.environ["PATH"], OPENAI_VALUE, DB_VALUE):
        assert canary not in seen
    assert "piper-sts-" not in seen
    assert len(text) < 600  # a 10 000-character name is not echoed back
    still = structured(await mcp.call_tool("get_secret", {"variable": "database_url"}))
    assert still["source"] == "piper_sts"


@pytest.mark.parametrize("variable", HOSTILE, ids=lambda v: repr(v[:20]))
async def test_raw_values_of_undeclared_names_are_refused_even_when_reveal_is_allowed(
    piper: LocalBackend, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET", AGENT_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-canary-secret")
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
    async with Client(make_server(client, RevealPolicy("allow")), mode="legacy") as mcp:
        result = await mcp.call_tool("get_secret", {"variable": variable, "mode": "value"})
    assert result.is_error is True
    seen = json.dumps(wire(result))
    for canary in (AGENT_SECRET, "aws-canary-secret", os.environ["PATH"], os.environ["HOME"]):
        assert canary not in seen


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"variable": 42},
        {"variable": None},
        {"variable": ["database_url"]},
        {"variable": "database_url", "mode": "both"},
    ],
)
async def test_malformed_arguments_are_tool_errors(mcp: Client, arguments: dict) -> None:  # type: ignore[type-arg]
    result = await mcp.call_tool("get_secret", arguments)
    assert result.is_error is True
    assert "piper-sts-" not in json.dumps(wire(result))
    assert (await mcp.call_tool("check_link", {})).is_error is False
