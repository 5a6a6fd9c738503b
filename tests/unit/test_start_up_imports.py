"""What a command loads before it does anything: only what it uses.

`piper-mcp exec --local` starts another program, so whatever it loads is added to that
program's start-up: a piper submodule comes without the Piper client (httpx, pydantic-
settings), a vault opened to read without its audit settings (pydantic-settings).
Each check runs in a fresh interpreter, whose `sys.modules` is what was loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import piper_mcp.piper
from piper_mcp.local.errors import VaultError
from piper_mcp.local.vault import Vault

WRONG_SETTING = "PIPER_LOCAL_AUDIT_MAX_ROWS: Input should be a valid integer"


def loaded_after(code: str, *watched: str, env: dict[str, str] | None = None) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after running `code`."""
    looked = "import json, sys\nprint(json.dumps([n for n in sys.argv[1:] if n in sys.modules]))"
    probe = f"{code}\n{looked}"
    done = subprocess.run(
        [sys.executable, "-c", probe, *watched],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_a_piper_submodule_loads_without_the_client() -> None:
    code = "import piper_mcp.piper.errors, piper_mcp.piper.names, piper_mcp.piper.protocol"
    watched = ("piper_mcp.piper.protocol", "piper_mcp.piper.client", "httpx", "pydantic_settings")
    assert loaded_after(code, *watched) == ["piper_mcp.piper.protocol"]


def test_the_piper_package_still_offers_every_public_name() -> None:
    for name in piper_mcp.piper.__all__:
        found = getattr(piper_mcp.piper, name)
        assert found.__module__.startswith("piper_mcp.piper."), name
    from piper_mcp.piper import AsyncPiperClient, PiperError, protocol

    assert AsyncPiperClient.__module__ == "piper_mcp.piper.client"
    assert issubclass(PiperError, Exception)
    assert protocol.__name__ == "piper_mcp.piper.protocol"  # a submodule, as before
    assert not hasattr(piper_mcp.piper, "NoSuchName")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A vault with a secret granted to its agent, and one audit row."""
    home = tmp_path / "vault"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("key", "sk-canary-read-7d2e", owner_user_id=me)
    vault.grant(me, "local-agent", "api_key", "key")
    vault.record("seeded", "ok")
    vault.close()
    return home


def test_a_vault_opened_to_read_loads_no_audit_settings(home: Path) -> None:
    reading = (
        "from pathlib import Path\n"
        "from piper_mcp.local.vault import Vault\n"
        f"vault = Vault.open(Path({str(home)!r}), only_to_read=True)\n"
        "grant = vault.grant_for(vault.local_user_id, 'local-agent', 'api_key')\n"
        "assert vault.secret_value(grant.credential_id) == 'sk-canary-read-7d2e'\n"
    )
    watched = ("piper_mcp.local.vault", "piper_mcp.local.settings", "pydantic_settings")
    assert loaded_after(reading, *watched) == ["piper_mcp.local.vault"]
    writing = f"{reading}vault.record('exec', 'ok')\n"
    assert loaded_after(writing, *watched) == list(watched)


def test_a_wrong_audit_setting_stops_an_open_at_once_and_a_reader_at_its_first_write(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_LOCAL_AUDIT_MAX_ROWS", "none")
    with pytest.raises(VaultError, match=WRONG_SETTING):
        Vault.open(home)
    reader = Vault.open(home, only_to_read=True)
    try:
        assert [agent.client_id for agent in reader.agents()] == ["local-agent"]
        with pytest.raises(VaultError, match=WRONG_SETTING):
            reader.record("exec", "ok")
        assert [entry.action for entry in reader.audit()] == ["seeded"]  # nothing written
    finally:
        reader.close()


def test_exec_local_becomes_its_command_without_pydantic(home: Path, tmp_path: Path) -> None:
    """Its own start is added to the start of the server it wraps (bench/exec_startup.py):
    no pydantic, and none of the modules that cost a tenth of it each (`dataclasses` with
    `inspect`, `logging`, `secrets` with `random` and `hashlib`)."""
    command = [sys.executable, "-c", "pass"]
    run = (
        "import os, sys\n"
        "from piper_mcp.cli import main\n"
        "became = []\n"
        "os.execve = lambda program, argv, env: became.append(env['INJECTED'])\n"
        f"main(['exec', '--local', '--env', 'INJECTED=api_key', '--', *{command!r}])\n"
        "assert became == ['sk-canary-read-7d2e']\n"
    )
    env = {"PATH": os.environ["PATH"], "PIPER_HOME": str(home), "HOME": str(tmp_path)}
    watched = (
        "piper_mcp.exec",
        "pydantic",
        "pydantic_settings",
        "piper_mcp.local.commands",
        *("dataclasses", "inspect", "logging", "secrets", "random", "hashlib"),
    )
    assert loaded_after(run, *watched, env=env) == ["piper_mcp.exec"]


def test_exec_local_leaves_a_setting_it_cannot_read_plainly_to_the_settings(
    home: Path, tmp_path: Path
) -> None:
    """The full reader says what is wrong, in the words `serve` uses."""
    env = {
        "PATH": os.environ["PATH"],
        "PIPER_HOME": str(home),
        "HOME": str(tmp_path),
        "PIPER_MCP_AUDIT_MAX_BYTES": "12",
    }
    done = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "exec", "--local", "--env", "X=api_key", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("piper-mcp: PIPER_MCP_AUDIT_MAX_BYTES")
    assert "4096" in done.stderr and done.stderr.count("\n") == 1
