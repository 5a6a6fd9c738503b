"""The README's main job and the examples, run as a person runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault
from tests.conftest import AGENT_SECRET, DB_VALUE, V1_AGENT_ID

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_demo_walks_the_whole_flow_and_succeeds() -> None:
    env = {**os.environ, "PIPER_INSTANCE_ID": "must-be-ignored"}
    done = run(["-m", "piper_mcp", "demo"], env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout
    assert "source=piper_sts" in lines
    assert "Secret Manager read with that STS token: sk-d…0000 (24 characters)" in lines
    assert "response_type=code&scope=manage_grants&client=demo-agent&variable=slack_token" in lines
    assert "In a local vault the user runs `" in lines  # the local fix beside the cloud page
    assert "local grant demo-agent slack_token SECRET`" in lines
    assert "source=environment_variable env_var_name=SLACK_TOKEN" in lines
    assert "sk-demo-0000000000000000" not in lines  # shown masked only


def test_the_sdk_style_example_runs_against_a_local_piper(piper: LocalBackend) -> None:
    names = {"piper_link_service_url": "PIPER_LINK_URL"}
    env = {
        **os.environ,
        "PIPER_CLIENT_ID": V1_AGENT_ID,
        "PIPER_CLIENT_SECRET": AGENT_SECRET,
        "EXAMPLE_GRANTED_VARIABLE": "database_url",
        "EXAMPLE_UNGRANTED_VARIABLE": "slack token",
    }
    for key, value in piper.client_settings().items():
        env[names.get(key, f"PIPER_{key.upper()}")] = str(value)
    done = run([str(ROOT / "examples" / "sdk_usage.py")], env)
    assert done.returncode == 0, done.stderr
    assert "source: piper_sts" in done.stdout
    assert f"secret read with it (last 4): ...{DB_VALUE[-4:]}" in done.stdout
    assert "from environment variable SLACK_TOKEN" in done.stdout
    assert AGENT_SECRET not in done.stdout + done.stderr


def test_the_mcp_agent_example_gets_a_token_and_reads_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "piper-home"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("My OpenAI key", "sk-example-0123456789", owner_user_id=me)
    vault.grant(me, "local-agent", "openai_api_key", "My OpenAI key")
    vault.close()
    env = {**os.environ, "PIPER_HOME": str(home)}
    done = run([str(ROOT / "examples" / "mcp_agent.py"), "openai_api_key"], env)
    assert done.returncode == 0, done.stderr
    assert "Got a piper_sts token for 'openai_api_key'" in done.stdout
    assert "Read the secret with it: sk-… (21 characters)" in done.stdout
    refused = run([str(ROOT / "examples" / "mcp_agent.py"), "PATH"], env)
    assert refused.returncode == 1
    assert "not a variable this agent declares" in refused.stdout


def test_no_command_prints_help_and_exits_2() -> None:
    done = run(["-m", "piper_mcp"], dict(os.environ))
    assert done.returncode == 2
    assert "demo" in done.stdout
