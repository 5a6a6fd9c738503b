"""Canary secrets never leak (SECURITY.md rules 5 and 6), over every transport.

A real `piper-mcp serve` (as a registered agent with a client secret, protocol
v1, at DEBUG) runs every tool, every failure path and every resource with
canary values; then stderr, the audit file, resources, error texts and, under
`deny`, tool results are searched for each canary, plain, base64 and
URL-encoded. STS tokens are what get_secret returns by design; they must
still never reach the logs or the audit trail.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.types import PromptReference

from piper_mcp.local.server_thread import LocalBackend
from tests.conftest import AGENT_SECRET, DB_VALUE, OPENAI_VALUE, USER_ID, V1_AGENT_ID
from tests.processes import mcp_http_servers, piper_mcp

pytestmark = pytest.mark.anyio

ENV_CANARY = "env-canary-value-1f2e3d"
CANARIES = [OPENAI_VALUE, DB_VALUE, AGENT_SECRET, ENV_CANARY]


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
    ]


def assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"{where} holds a form of a canary: {form[:6]}…"


@pytest.fixture
def server_env(
    piper: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    piper.vault.put_secret("Ada's Slack", ENV_CANARY + "-vault", owner_user_id=USER_ID)
    return {
        **os.environ,
        **piper.environment(),
        "PIPER_CLIENT_ID": V1_AGENT_ID,
        "PIPER_CLIENT_SECRET": AGENT_SECRET,
        "PIPER_VARIABLES": "OpenAI API Key,database_url,slack_token,github_token",
        "GITHUB_TOKEN": ENV_CANARY,
        "PIPER_MCP_REVEAL": "deny",
        "PIPER_MCP_LOG_LEVEL": "DEBUG",
        "PIPER_MCP_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
        "PIPER_HOME": str(tmp_path / "home"),
    }


async def exercise(client: Client) -> tuple[str, list[str]]:
    """Everything a model can do; (all result text, the STS tokens handed out)."""
    seen: list[Any] = []
    tokens: list[str] = []
    for variable in ("OpenAI API Key", "database_url"):
        result = await client.call_tool("get_secret", {"variable": variable})
        assert result.is_error is False, result
        tokens.append(result.structured_content["token"])
        seen.append(result)
    for arguments in (
        {"variable": "slack_token"},  # not granted
        {"variable": "github_token"},  # only in the environment
        {"variable": "OpenAI API Key", "mode": "value"},  # denied
        {"variable": "github_token", "mode": "value"},  # denied
        {"variable": "PIPER_CLIENT_SECRET"},  # undeclared
        {"variable": "PATH", "mode": "value"},
    ):
        result = await client.call_tool("get_secret", arguments)
        assert result.is_error is True
        seen.append(result)
    seen.append(await client.call_tool("check_link", {}))
    seen.append(await client.call_tool("list_variables", {}))
    for uri in (
        "piper://link",
        "piper://variables",
        "piper://variables/github_token",
        "piper://audit",
    ):
        seen.append(await client.read_resource(uri))
    seen.append(await client.get_prompt("fix_variable", {"variable": "slack_token"}))
    seen.append(
        await client.complete(
            PromptReference(name="fix_variable"), {"name": "variable", "value": ""}
        )
    )
    text = "\n".join(json.dumps(item.model_dump(mode="json"), ensure_ascii=False) for item in seen)
    return text, tokens


def check(results: str, stderr: str, audit: Path, tokens: list[str]) -> None:
    assert "DEBUG" in stderr  # the logs were really at their most verbose
    assert_clean(results, CANARIES, "a tool result, resource or error text")
    assert_clean(stderr, CANARIES + tokens, "stderr")
    trail = audit.read_text()
    assert len(trail.splitlines()) == 8
    assert_clean(trail, CANARIES + tokens, "the audit trail")


async def test_stdio(server_env: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve"], env=server_env
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            results, tokens = await exercise(client)
        errlog.seek(0)
        stderr = errlog.read()
    check(results, stderr, Path(server_env["PIPER_MCP_AUDIT_FILE"]), tokens)


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_http(server_env: dict[str, str], transport: str) -> None:
    with mcp_http_servers(server_env, local=False) as start:
        url = start(transport)
        connect = url if transport == "streamable-http" else sse_client(url)
        async with Client(connect, mode="legacy") as client:  # type: ignore[arg-type]
            results, tokens = await exercise(client)
        stderr = start.logs[url].read_text()  # type: ignore[attr-defined]
    check(results, stderr, Path(server_env["PIPER_MCP_AUDIT_FILE"]), tokens)


def test_the_audit_command_prints_the_trail_without_values(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    trail = Path(server_env["PIPER_MCP_AUDIT_FILE"])
    trail.write_text(
        json.dumps(
            {
                "time": "2026-11-28T10:00:00.000+00:00",
                "client": "host 1",
                "variable": "database_url",
                "mode": "token",
                "outcome": "ok",
                "source": "piper_sts",
                "consent_asked": False,
            }
        )
        + "\n"
    )
    done = piper_mcp("audit", "--limit", "5", env=server_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "2026-11-28T10:00:00.000+00:00  host 1  'database_url'  token  ok  piper_sts"
    )
    as_json = piper_mcp("audit", "--json", env=server_env)
    assert json.loads(as_json.stdout)[0]["variable"] == "database_url"
