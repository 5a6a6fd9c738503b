"""`piper-mcp serve --local` for real: stdio, SSE and streamable HTTP, as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from piper_mcp.local.vault import Vault
from tests.processes import mcp_http_servers

pytestmark = pytest.mark.anyio

VALUE = "sk-canary-transport-4411"


@pytest.fixture
def granted_home(piper_home: Path) -> Path:
    """A local vault where the default agent has been granted `openai_api_key`."""
    vault, _ = Vault.init(piper_home)
    me = vault.local_user_id
    vault.put_secret("My OpenAI key", VALUE, owner_user_id=me)
    vault.grant(me, "local-agent", "openai_api_key", "My OpenAI key")
    vault.close()
    return piper_home


def serve_once(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`piper-mcp serve ARGS` with stdin already closed: it starts, then ends."""
    return subprocess.run(
        [sys.executable, "-m", "piper_mcp", "serve", *args],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def exercise(client: Client) -> None:
    tools = await client.list_tools()
    assert [tool.name for tool in tools.tools] == [
        "get_secret",
        "call_api",
        "check_link",
        "list_variables",
    ]
    result = await client.call_tool("get_secret", {"variable": "openai_api_key"})
    assert result.is_error is False
    assert result.structured_content["source"] == "piper_sts"
    refused = await client.call_tool("get_secret", {"variable": "PATH"})
    assert refused.is_error is True
    listed = await client.call_tool("list_variables", {})
    assert listed.structured_content["variables"][0]["source"] == "piper"
    assert VALUE not in str(result) + str(listed)


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_stdio(granted_home: Path, cli_env: dict[str, str], era: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=cli_env
    )
    async with Client(params, mode=era) as client:  # type: ignore[arg-type]
        await exercise(client)


def test_stdio_writes_nothing_but_protocol_to_stdout(
    granted_home: Path, cli_env: dict[str, str]
) -> None:
    done = serve_once(cli_env, "--local", "--log-level", "DEBUG")
    assert done.stdout == ""
    assert "Serving MCP over stdio" in done.stderr


def test_a_fresh_home_gets_a_vault_and_instructions_on_stderr(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    done = serve_once(cli_env, "--local")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (
        f"created a local Piper vault in {piper_home} with the agent 'local-agent'" in done.stderr
    )
    # Started as `python -m piper_mcp`, the hint says so (issue 12.5).
    assert "-m piper_mcp local grant local-agent openai_api_key" in done.stderr
    assert (piper_home / "vault.sqlite3").exists()


@pytest.fixture
def http_server(granted_home: Path, cli_env: dict[str, str]) -> Iterator[Callable[[str], str]]:
    with mcp_http_servers(cli_env) as start:
        yield start


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_streamable_http(http_server: Callable[[str], str], era: str) -> None:
    url = http_server("streamable-http")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
    async with Client(url, mode=era) as client:  # type: ignore[arg-type]
        await exercise(client)


async def test_sse(http_server: Callable[[str], str]) -> None:
    url = http_server("sse")
    assert url.endswith("/sse")
    async with Client(sse_client(url), mode="legacy") as client:
        await exercise(client)


def test_an_unknown_agent_is_a_clear_error(granted_home: Path, cli_env: dict[str, str]) -> None:
    done = serve_once(cli_env, "--local", "--agent", "nobody")
    assert done.returncode == 1
    assert "there is no agent 'nobody'" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_settings_are_one_line(granted_home: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PIPER_MCP_PORT": "not-a-port"}
    done = serve_once(env, "--transport", "sse")
    assert done.returncode == 1
    assert done.stderr.startswith("piper-mcp: PIPER_MCP_PORT:")
    assert os.linesep not in done.stderr.rstrip()


def test_allowing_raw_values_is_announced_as_a_warning(
    granted_home: Path, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "PIPER_MCP_REVEAL_OVERRIDES": '{"openai_api_key": "allow"}'}
    done = serve_once(env, "--local", "--reveal", "deny")
    assert "WARNING piper_mcp: Reveal policy allows raw secret values" in done.stderr
    assert "'openai_api_key': 'allow'" in done.stderr
    quiet = serve_once(cli_env, "--local")
    assert "Reveal policy allows" not in quiet.stderr
