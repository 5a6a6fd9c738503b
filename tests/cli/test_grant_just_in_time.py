"""`serve --local` as hosts run it: a call for an ungranted variable, granted on the page, answered.

Over stdio and streamable HTTP, in both protocol eras, with the SDK's client (which
supports URL-mode elicitation); and a client that declares only form elicitation,
over raw JSON-RPC on stdio, which gets the tool error with the local command instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult

from tests.cli.conftest import STORED, UNGRANTED
from tests.grant_page import open_and_choose
from tests.processes import HTTP_TOKEN, mcp_http_servers, serve_local_over_stdio, with_token

pytestmark = pytest.mark.anyio

VARIABLE, SECRET = UNGRANTED, STORED


def user_who_grants(seen: list[str]) -> Any:
    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        seen.append(params.url)
        done = await open_and_choose(params.url, secret=SECRET)
        assert done.status_code == 200, done.text
        return ElicitResult(action="accept")

    return answer


async def granted_on_the_way(client: Client, seen: list[str]) -> None:
    result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error is False, result.content
    assert result.structured_content["source"] == "piper_sts"
    assert len(seen) == 1 and seen[0].startswith("http://127.0.0.1:")
    again = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert again.is_error is False and len(seen) == 1  # granted now: nobody is asked again


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_over_stdio(ungranted_home: Path, cli_env: dict[str, str], era: str) -> None:
    seen: list[str] = []
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=cli_env
    )
    answer = user_who_grants(seen)
    async with Client(params, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        await granted_on_the_way(client, seen)


@pytest.fixture
def http_server(ungranted_home: Path, cli_env: dict[str, str]) -> Iterator[Callable[..., str]]:
    with mcp_http_servers(cli_env) as start:
        yield start


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_over_streamable_http_with_a_bearer_token(
    http_server: Callable[..., str], era: str
) -> None:
    seen: list[str] = []
    url = http_server("streamable-http", more_env={"PIPER_MCP_HTTP_TOKEN": HTTP_TOKEN})
    answer = user_who_grants(seen)
    async with Client(with_token(url), mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        await granted_on_the_way(client, seen)


async def test_over_http_without_a_token_no_link_is_handed_out(
    http_server: Callable[..., str],
) -> None:
    """Any local process can be that client: it would grant itself (see just_in_time.py)."""
    asked: list[str] = []
    url = http_server("streamable-http")
    async with Client(url, elicitation_callback=user_who_grants(asked)) as client:
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error is True and asked == []
    assert f"local grant local-agent {VARIABLE} SECRET" in result.content[0].text  # type: ignore[union-attr]


def test_a_client_with_form_elicitation_only_gets_the_command(
    ungranted_home: Path, cli_env: dict[str, str]
) -> None:
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"elicitation": {"form": {}}},
                "clientInfo": {"name": "form-only", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "get_secret", "arguments": {"variable": VARIABLE}},
        },
    ]
    with serve_local_over_stdio(cli_env, messages, stderr=subprocess.DEVNULL) as server:
        assert server.stdin is not None and server.stdout is not None
        watchdog = threading.Timer(60, server.kill)  # a hung server fails, not hangs, the test
        watchdog.start()
        answers = [json.loads(server.stdout.readline()) for _ in range(2)]
        server.stdin.close()  # the host goes away: the server ends
        assert server.wait(timeout=30) == 0
        watchdog.cancel()
    assert [answer.get("method") for answer in answers] == [None, None]  # no elicitation
    result = answers[-1]["result"]
    said = result["content"][0]["text"]
    assert result["isError"] is True
    assert f"local grant local-agent {VARIABLE} SECRET" in said
    assert "/grant/" not in said
