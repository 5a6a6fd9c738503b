"""`piper-mcp check`: a readable report with a fix per problem; exit 0 only when all works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault
from tests.cli.conftest import Cli
from tests.conftest import AGENT_ID, AGENT_SECRET, V1_AGENT_ID


def test_a_working_local_setup_passes(cli: Cli, cli_process: Cli, piper_home: Path) -> None:
    vault, _ = Vault.init(piper_home)
    me = vault.local_user_id
    vault.put_secret("key", "v", owner_user_id=me)
    vault.grant(me, "local-agent", "openai_api_key", "key")
    vault.close()
    done = cli_process("check", "--local")  # the one run as its own process
    assert done.code == 0, done.out + done.err
    configuration, link, agent, variable = done.out.splitlines()[:4]
    assert configuration == (
        f"ok    configuration: agent local-agent of the local vault {piper_home}, protocol v2, "
        "variables: openai_api_key"
    )
    # The latency varies; the instance id is shown by its last 4 characters, and the
    # embedded Link by what it is rather than by its in-process placeholder URL.
    assert re.fullmatch(
        r"ok    piper link: instance …[\w-]{4} from the local vault's Link, in-process "
        r"\(\d+ ms\)",
        link,
    ), link
    assert agent == "ok    backend and agent credentials: Piper accepts this agent"
    assert variable == "ok    variable openai_api_key: granted in Piper"
    assert done.out.rstrip().endswith("Everything a host needs works.")
    report = cli("check", "--local", "--json").json()
    assert report["ok"] is True
    assert [c["check"] for c in report["checks"]] == [
        "configuration",
        "piper link",
        "backend and agent credentials",
        "variable openai_api_key",
    ]


def test_a_missing_grant_fails_with_the_local_grant_command(cli: Cli, piper_home: Path) -> None:
    """Issue 12.3: a local vault's fix is `piper-mcp local grant`, not the cloud's page."""
    vault, _ = Vault.init(piper_home)
    vault.add_agent("helper", None, owner_user_id=vault.local_user_id, variables=["slack_token"])
    vault.close()
    done = cli("check", "--local", "--agent", "helper")
    assert done.code == 1
    assert "FAIL  variable slack_token: missing: The user has not granted" in done.out
    assert (
        "fix: 'slack_token' is granted to the agent 'helper' in the local vault "
        f"{piper_home} with `piper-mcp local grant helper slack_token SECRET`" in done.out
    )
    assert "`piper-mcp local secret list`" in done.out
    assert "agentpiper.com" not in done.out


def test_check_creates_no_vault(cli: Cli, piper_home: Path) -> None:
    """Issue 12.2: a check only looks; it says where the vault it looked for would be."""
    done = cli("check", "--local")
    assert done.code == 1
    assert done.err.splitlines() == [
        f"piper-mcp: there is no vault in {piper_home}; create it with `piper-mcp local init`, "
        "or start `piper-mcp serve --local`, which creates it"
    ]
    assert not piper_home.exists()


@pytest.fixture
def cloud_env(cli_env: dict[str, str], piper: LocalBackend) -> dict[str, str]:
    """Settings for a Piper 'cloud' (the local backend in this process) and the research agent."""
    cli_env.update(piper.environment())
    cli_env.update({"PIPER_CLIENT_ID": AGENT_ID, "PIPER_VARIABLES": "database_url,slack_token"})
    return cli_env


def test_wrong_agent_credentials_fail_with_the_settings_to_check(
    cli: Cli, cloud_env: dict[str, str]
) -> None:
    cloud_env.update(
        PIPER_CLIENT_ID=V1_AGENT_ID, PIPER_CLIENT_SECRET="a-wrong-client-secret-0123456789abc"
    )
    report = cli("check", "--json").json()
    assert report["ok"] is False
    [agent] = [c for c in report["checks"] if c["check"] == "backend and agent credentials"]
    assert agent["ok"] is False
    assert "invalid_client" in agent["detail"]
    assert "PIPER_CLIENT_SECRET" in agent["fix"]


def test_the_right_credentials_pass_and_each_variable_is_reported(
    cli: Cli, cloud_env: dict[str, str]
) -> None:
    cloud_env.update(PIPER_CLIENT_ID=V1_AGENT_ID, PIPER_CLIENT_SECRET=AGENT_SECRET)
    report = cli("check", "--json").json()
    checks = {c["check"]: c["ok"] for c in report["checks"]}
    assert checks == {
        "configuration": True,
        "piper link": True,
        "backend and agent credentials": True,
        "variable database_url": True,
        "variable slack_token": False,
    }
    assert cli("check").code == 1


def test_nothing_configured_says_what_to_set(cli: Cli) -> None:
    done = cli("check")
    assert done.code == 1
    assert "fix: PIPER_CLIENT_ID is not set, so every get_secret fails: set it (and " in done.out
    assert "or `piper-mcp serve --local` serves a local vault instead." in done.out
    # Said to the person at the terminal (not "ask the user"), with the local check.
    link_fix = done.out.splitlines()[3]
    assert link_fix.startswith("      fix: Start the Piper Link app and sign in, or set ")
    assert link_fix.endswith(" For a local vault instead, `piper-mcp check --local`.")
