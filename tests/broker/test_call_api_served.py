"""`call_api` from `piper-mcp serve --local` as hosts start it: stdio and streamable HTTP.

The operator's rule comes from PIPER_MCP_API_RULES and the trust from SSL_CERT_FILE,
as a user would set them; the API is conftest.py's HTTPS server, reached as
`localhost` (real DNS, so the rule must allow a private address).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from piper_mcp.local.vault import Vault
from tests.broker.conftest import CREDENTIAL, Servers, masked
from tests.processes import mcp_http_servers

pytestmark = pytest.mark.anyio

VARIABLE = "example_key"


@pytest.fixture
def env(tmp_path: Path, servers: Servers) -> dict[str, str]:
    home = tmp_path / "piper-home"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("Example key", CREDENTIAL, owner_user_id=me)
    vault.grant(me, "local-agent", VARIABLE, "Example key")
    vault.close()
    rule = {"hosts": [f"localhost:{servers.api_port}"], "allow_private": True}
    return {
        **os.environ,
        "PIPER_HOME": str(home),
        "PIPER_MCP_API_RULES": json.dumps({VARIABLE: rule}),
        "PIPER_MCP_REVEAL": "allow",
        "SSL_CERT_FILE": str(servers.ca_file),
    }


async def called(client: Client, servers: Servers) -> Any:
    url = f"https://localhost:{servers.api_port}/needs-key"
    result = await client.call_tool("call_api", {"variable": VARIABLE, "url": url})
    assert result.is_error is False, result.content
    assert result.structured_content["status"] == 200
    assert servers.api_requests[-1]["authorization"] == "Bearer <credential>"
    echoed = await client.call_tool(
        "call_api",
        {"variable": VARIABLE, "url": f"https://localhost:{servers.api_port}/echo-key"},
    )
    for said in (str(result), str(echoed)):
        assert CREDENTIAL not in said and masked(said) == said
    return echoed


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_over_stdio(env: dict[str, str], servers: Servers, era: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=env
    )
    async with Client(params, mode=era) as client:  # type: ignore[arg-type]
        echoed = await called(client, servers)
    assert "[redacted]" in echoed.structured_content["body"]


@pytest.fixture
def http_server(env: dict[str, str]) -> Iterator[Any]:
    with mcp_http_servers(env) as start:
        yield start


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_over_streamable_http(http_server: Any, servers: Servers, era: str) -> None:
    url = http_server("streamable-http")
    async with Client(url, mode=era) as client:  # type: ignore[arg-type]
        await called(client, servers)
    log = await anyio.Path(http_server.logs[url]).read_text()
    assert CREDENTIAL not in log and masked(log) == log


def test_a_bad_rule_stops_the_start_in_one_line(env: dict[str, str]) -> None:
    env = {**env, "PIPER_MCP_API_RULES": '{"example_key": "no-such-preset"}'}
    done = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "serve", "--local"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("piper-mcp: PIPER_MCP_API_RULES:"), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
