"""Issue 11: `serve --local` answers at once and opens its vault meanwhile; what that keeps.

The vault opens in the background while the server answers `initialize`; a vault that
cannot open still stops the server with its one line; the declared variables are read
again only when the vault changed, which a grant from another process does; HTTP serving
writes no line per request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.vault import Vault
from tests.processes import initialize, mcp_http_servers, serve_local_over_stdio

VALUE = "sk-canary-start-value-8e41"

pytestmark = pytest.mark.anyio


async def test_a_grant_from_another_process_is_served_on_the_next_call(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    vault, _ = Vault.init(piper_home)
    me = vault.local_user_id
    vault.put_secret("Later key", VALUE, owner_user_id=me)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=cli_env
    )
    async with Client(params) as client:
        refused = await client.call_tool("get_secret", {"variable": "later_key"})
        assert refused.is_error is True
        vault.grant(me, DEFAULT_AGENT, "later_key", "Later key")  # what `local grant` does
        served = await client.call_tool("get_secret", {"variable": "later_key"})
        assert served.is_error is False, served
        assert served.structured_content["source"] == "piper_sts"
        vault.revoke(me, DEFAULT_AGENT, "later_key")
        again = await client.call_tool("get_secret", {"variable": "later_key"})
        assert again.is_error is True
    vault.close()


def test_a_vault_that_cannot_open_stops_a_session_already_started(
    piper_home: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """stdin stays open: the server stops because of the vault, not because the host left."""
    for home in (piper_home, tmp_path / "another"):
        Vault.init(home)[0].close()
    (piper_home / "vault.key").write_bytes((tmp_path / "another" / "vault.key").read_bytes())
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    call["params"] = {"name": "get_secret", "arguments": {"variable": "openai_api_key"}}
    server = serve_local_over_stdio(cli_env, [initialize("host"), call])
    assert server.stdin is not None and server.stdout is not None and server.stderr is not None
    try:
        assert server.wait(timeout=60) == 1
        out, err = server.stdout.read(), server.stderr.read()
    finally:
        server.stdin.close()
        server.kill()
    for line in out.splitlines():  # whatever was answered before it stopped is protocol
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert err.splitlines() == [
        f"piper-mcp: cannot open the vault in {piper_home}: the key file does not belong to "
        "this vault"
    ]


def test_an_unknown_agent_in_a_fresh_home_creates_no_vault(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "serve", "--local", "--agent", "research"],
        env=cli_env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    [said] = done.stderr.splitlines()
    assert said.startswith(
        f"piper-mcp: there is no vault in {piper_home}, so no agent 'research'; a new vault "
        "has only 'local-agent'. Create it with `"
    )
    assert not piper_home.exists()


async def test_http_serving_writes_no_line_per_request(
    piper_home: Path, cli_env: dict[str, str]
) -> None:
    Vault.init(piper_home)[0].close()
    with mcp_http_servers(cli_env) as start:
        url = start("streamable-http")  # at the default level, INFO
        async with Client(url) as client:
            for _ in range(3):
                assert (await client.call_tool("list_variables", {})).is_error is False
        said = start.logs[url].read_text()  # type: ignore[attr-defined]
    assert "Serving MCP over streamable-http" in said
    assert "POST /mcp" not in said
    # The embedded backend's own uvicorn (the Secret Manager port) says nothing at INFO.
    assert said.count("Started server process") == 1
