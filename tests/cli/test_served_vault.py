"""Issue 12.2, 12.3, 12.5, 12.7: which vault is served, and fixes a local user can run.

A host may start `serve --local` without the user's PIPER_HOME and so serve another
vault: every message about the vault names its path, and the tools say which one is
served. With a local vault the fix for a missing grant is `piper-mcp local grant`, never
the Piper cloud's grant page. A wrong `--agent` lists the agents there are.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest
from mcp import Client

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.vault import Vault
from piper_mcp.server.app import build_server
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.serve import build_service
from piper_mcp.server.settings import ServeSettings
from tests.cli.conftest import Cli

pytestmark = pytest.mark.anyio

LOCAL_GRANT = "`piper-mcp local grant helper slack_token SECRET`"
CLOUD = "agentpiper.com"


@pytest.fixture
def helper_vault(piper_home: Path) -> Path:
    """A vault whose agent `helper` declares `slack_token`, not granted."""
    vault, _ = Vault.init(piper_home)
    vault.add_agent("helper", None, owner_user_id=vault.local_user_id, variables=["slack_token"])
    vault.close()
    return piper_home


@pytest.fixture
async def helper_mcp(helper_vault: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """A real MCP client of what `serve --local --agent helper` serves, in this process."""
    monkeypatch.setenv("PIPER_HOME", str(helper_vault))
    with ExitStack() as stack:
        service = build_service(ServeSettings(local=True, agent="helper"), stack)
        async with Client(build_server(service)) as client:
            yield client
        await service.client.aclose()


async def test_every_grant_fix_is_the_local_command(helper_mcp: Client, helper_vault: Path) -> None:
    refused = await helper_mcp.call_tool("get_secret", {"variable": "slack_token"})
    assert refused.is_error is True
    [listed] = (await helper_mcp.call_tool("list_variables", {})).structured_content["variables"]
    [resource] = (await helper_mcp.read_resource("piper://variables/slack_token")).contents
    prompt = await helper_mcp.get_prompt("fix_variable", {"variable": "slack_token"})
    said = {
        "get_secret": refused.content[0].text,  # type: ignore[union-attr]
        "list_variables": listed["advice"],
        "resource": json.loads(resource.text)["advice"],  # type: ignore[union-attr]
        "prompt": prompt.messages[0].content.text,  # type: ignore[union-attr]
    }
    for where, text in said.items():
        assert f"in the local vault {helper_vault} with {LOCAL_GRANT}" in text, where
        assert "`piper-mcp local secret list`" in text, where
        assert CLOUD not in text, where


async def test_an_undeclared_variable_gets_the_grant_command_for_that_name(
    helper_mcp: Client,
) -> None:
    asked = await helper_mcp.call_tool("get_secret", {"variable": "github_token"})
    said = asked.content[0].text  # type: ignore[union-attr]
    assert "Ask for one of those. 'github_token' is granted to the agent 'helper'" in said
    assert "`piper-mcp local grant helper github_token SECRET`" in said
    # A name a model made up to be pasted into a shell is never put into the command.
    hostile = await helper_mcp.call_tool("get_secret", {"variable": "x; rm -rf ~"})
    said = hostile.content[0].text  # type: ignore[union-attr]
    assert "`piper-mcp local grant helper VARIABLE SECRET`" in said
    assert "rm -rf ~ " not in said.split("declares", 1)[1]


async def test_the_tools_and_resources_say_which_vault_is_served(
    helper_mcp: Client, helper_vault: Path
) -> None:
    link = (await helper_mcp.call_tool("check_link", {})).structured_content
    variables = (await helper_mcp.call_tool("list_variables", {})).structured_content
    assert link["vault"] == variables["vault"] == str(helper_vault)
    for uri in ("piper://link", "piper://variables"):
        [content] = (await helper_mcp.read_resource(uri)).contents
        assert json.loads(content.text)["vault"] == str(helper_vault)  # type: ignore[union-attr]


def test_check_names_the_vault_and_the_agent(cli: Cli, helper_vault: Path) -> None:
    done = cli("check", "--local", "--agent", "helper")
    assert done.out.startswith(
        f"ok    configuration: agent helper of the local vault {helper_vault}, "
    )
    assert LOCAL_GRANT in done.out and CLOUD not in done.out


# --- a wrong --agent (12.7) ---


@pytest.fixture
def two_agents(piper_home: Path) -> Path:
    vault, _ = Vault.init(piper_home)
    vault.add_agent("ci-bot", None, owner_user_id=vault.local_user_id, variables=["token"])
    vault.close()
    return piper_home


def serve_local(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """`piper-mcp serve --local FLAGS`, stdin closed at once: it starts, then ends."""
    return subprocess.run(
        [sys.executable, "-m", "piper_mcp", "serve", "--local", *flags],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_mistyped_agent_gets_the_agents_there_are_and_the_closest(
    cli: Cli, cli_env: dict[str, str], two_agents: Path
) -> None:
    said = (
        f"piper-mcp: there is no agent 'local-agnt' in {two_agents}; agents: ci-bot, "
        "local-agent. Did you mean 'local-agent'?"
    )
    checked = cli("check", "--local", "--agent", "local-agnt")
    assert (checked.code, checked.err.splitlines()) == (1, [said])
    served = serve_local(cli_env, "--agent", "local-agnt")
    assert (served.returncode, served.stderr.splitlines()) == (1, [said])


def test_an_unknown_agent_is_not_offered_for_registering(cli: Cli, two_agents: Path) -> None:
    done = cli("check", "--local", "--agent", "zzz")
    assert done.code == 1
    assert f"there is no agent 'zzz' in {two_agents}; agents: ci-bot, local-agent." in done.err
    assert "Did you mean" not in done.err
    assert "agent add zzz" not in done.err
    assert "--agent" in done.err  # choose one of those


# --- a failed start creates no vault (12.2) ---


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (("serve", "--local", "--transport", "carrier-pigeon"), {}),
        (("serve", "--local"), {"PIPER_MCP_REVEAL": "sometimes"}),
        (("serve", "--local"), {"PIPER_MCP_REVEAL_OVERRIDES": "not json"}),
        (("serve", "--local", "--transport", "sse", "--host", "0.0.0.0"), {}),
        (("check", "--local"), {}),
        (("check", "--local", "--agent", "ci-bot"), {}),
    ],
)
def test_a_failed_start_creates_no_vault(
    cli: Cli,
    cli_env: dict[str, str],
    piper_home: Path,
    flags: tuple[str, ...],
    env: dict[str, str],
) -> None:
    cli_env.update(env)
    assert cli(*flags).code != 0
    assert not piper_home.exists()


async def test_giving_up_waiting_for_the_vault_does_not_stop_it_opening(
    piper_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed stdio start cancels what waits for the vault; the vault still opens and
    `stop()` closes it, with no traceback from the opening thread."""
    monkeypatch.setenv("PIPER_HOME", str(piper_home))
    local = LocalPiper(DEFAULT_AGENT).open_in_background()
    try:
        with anyio.move_on_after(0):
            await local.ready()
        assert local.failure() is None
    finally:
        local.stop()


def test_an_unknown_agent_or_a_busy_port_creates_no_vault(
    cli_env: dict[str, str], piper_home: Path
) -> None:
    assert serve_local(cli_env, "--agent", "ci-bot").returncode == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = serve_local(cli_env, "--transport", "streamable-http", "--port", port)
    assert busy.returncode != 0
    assert not piper_home.exists()


# --- hints as the user can run them (12.5) ---


@pytest.mark.parametrize("command", [["serve", "--local"], ["local", "init"]], ids=" ".join)
def test_the_first_run_hint_names_the_program_as_started(
    command: list[str], tmp_path: Path
) -> None:
    """Started as `.venv/bin/piper-mcp` with the venv off PATH, as the Quickstart does."""
    installed = Path(sys.executable).parent / "piper-mcp"
    program = tmp_path / ".venv" / "bin" / "piper-mcp"
    program.parent.mkdir(parents=True)
    program.symlink_to(installed)
    home = tmp_path / "piper-home"
    env = {"PATH": os.defpath, "HOME": str(tmp_path), "PIPER_HOME": str(home)}
    done = subprocess.run(
        [".venv/bin/piper-mcp", *command],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert str(home) in said
    assert "\n  .venv/bin/piper-mcp local secret set 'My OpenAI key'" in said
    assert "\n  .venv/bin/piper-mcp local grant local-agent openai_api_key" in said
