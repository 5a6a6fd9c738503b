"""`exec --local` reads the vault itself, and says what `serve --local` says.

Without the Piper client and the in-process backend (they take longer to load than many
a command exec starts), exec decides a grant itself; these tests hold what it says and
audits to what `serve --local` would. (tests/cli/test_exec.py runs the command itself.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from piper_mcp import exec as exec_command
from piper_mcp.exec import Audit, Injection, Refused, VaultAgent, from_vault
from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.errors import VaultError
from piper_mcp.local.grant_requests import GrantRequests
from piper_mcp.local.vault import Vault
from piper_mcp.piper import protocol_names
from piper_mcp.piper.errors import error_for
from piper_mcp.piper.wire import BackendAnswerError
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.credentials import CredentialService, Refusal
from piper_mcp.server.local_piper import LocalGrants, LocalPiper
from piper_mcp.server.redaction import Redactor


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "vault"
    monkeypatch.setenv("PIPER_HOME", str(home))
    return home


@pytest.fixture
def vault(home: Path) -> Iterator[Vault]:
    """`research` declares `x_key` and has no grant of it."""
    vault, _ = Vault.init(home)
    vault.add_agent("research", None, owner_user_id=vault.local_user_id, variables=["x_key"])
    yield vault
    vault.close()


def said_by_serve(agent_id: str) -> str:
    """What `serve --local` (and `exec --local` before it read the vault itself) says when
    it cannot act as `agent_id`."""
    local = LocalPiper(agent_id, loopback=False)
    try:
        with pytest.raises(VaultError) as raised:
            local.open()
    finally:
        local.stop()
    return str(raised.value)


def said_by_exec(agent_id: str) -> str:
    with pytest.raises(VaultError) as raised:
        VaultAgent(agent_id)
    return str(raised.value)


@pytest.mark.parametrize("agent_id", [DEFAULT_AGENT, "nobody", "local-agnt"])
def test_without_a_vault_exec_says_what_serve_says(home: Path, agent_id: str) -> None:
    assert said_by_exec(agent_id) == said_by_serve(agent_id)
    assert f"there is no vault in {home}" in said_by_exec(agent_id)


@pytest.mark.parametrize("agent_id", ["nobody", "reserch"])
def test_for_an_agent_the_vault_lacks_exec_says_what_serve_says(
    vault: Vault, agent_id: str
) -> None:
    assert said_by_exec(agent_id) == said_by_serve(agent_id)
    assert f"there is no agent {agent_id!r}" in said_by_exec(agent_id)


def test_a_missing_grant_is_said_as_the_backends_answer_to_serve_is(
    vault: Vault, home: Path
) -> None:
    agent = VaultAgent("research")
    try:
        with pytest.raises(Refused) as raised:
            agent.granted_value("x_key")
    finally:
        agent.vault.close()
    assert raised.value.reason == protocol_names.MAPPING_NOT_FOUND
    # What the in-process backend answers (local/app.py) and the client makes of it.
    answer = BackendAnswerError(
        protocol_names.RESOLVE_MAPPING_FUNCTION,
        404,
        protocol_names.MAPPING_NOT_FOUND,
        "No grant of this variable to this agent.",
        None,
    )
    error = error_for(answer, "x_key", client_id="research", grant_page_url="")
    service = CredentialService(
        None,  # type: ignore[arg-type]  # `said` asks no Piper
        lambda: ["x_key"],
        grants=LocalGrants(home, "research", GrantRequests(), ""),
    )
    assert str(raised.value) == f"no value for 'x_key': {service.said('x_key', error)}"


def test_an_undeclared_variable_is_audited_as_serve_audits_it() -> None:
    service = CredentialService(None, lambda: ["x_key"])  # type: ignore[arg-type]
    with pytest.raises(Refusal) as refused:
        service.declared_name("not_declared")
    assert refused.value.reason == exec_command.UNDECLARED


def test_a_value_read_is_scrubbed_from_anything_exec_says_after(
    vault: Vault, tmp_path: Path
) -> None:
    """As the Piper client reports each value it fetches to the redactor (SECURITY.md, 6)."""
    value = "sk-canary-scrubbed-3f1a"
    vault.put_secret("key", value, owner_user_id=vault.local_user_id)
    vault.grant(vault.local_user_id, "research", "x_key", "key")
    redactor = Redactor()
    audit = Audit(AuditTrail(tmp_path / "audit.jsonl"), "command", "local-agent")
    assert from_vault("research", [Injection("T", "x_key")], audit, redactor) == {"T": value}
    assert value not in redactor.scrub(f"cannot run command: {value}")
