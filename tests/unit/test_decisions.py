"""Deciding grant requests against the vault: one decision per request, whoever is first."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piper_mcp.local import decisions
from piper_mcp.local.errors import VaultError
from piper_mcp.local.running import identity
from piper_mcp.local.vault import MAX_WAITING_REQUESTS, StoredGrantRequest, Vault

AGENT = "ci-bot"


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault, _ = Vault.init(tmp_path / "piper-home")
    vault.add_agent(AGENT, None, owner_user_id=vault.local_user_id, variables=["npm_token"])
    vault.put_secret("npm", "npm-value", owner_user_id=vault.local_user_id)
    yield vault
    vault.close()


def waiting(
    vault: Vault, request_id: str = "req-1", agent: str = AGENT, raised_by: str | None = None
) -> None:
    now = time.time()
    vault.open_grant_request(
        StoredGrantRequest(
            request_id, agent, "npm_token", "Host 1.0", now, now + 600, None, None, raised_by
        )
    )


@pytest.fixture(scope="module")
def gone() -> str:
    """A process that has ended (a server killed before it withdrew its request)."""
    ended = subprocess.run(
        [sys.executable, "-c", "from piper_mcp.local.running import identity; print(identity())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return ended.stdout.strip()


def test_a_grant_for_a_request_denied_meanwhile_is_not_made(vault: Vault) -> None:
    """The dashboard reads the request as waiting; the command line denies it; the
    dashboard's grant then comes: the user's no stands, nothing is granted."""
    waiting(vault)
    assert vault.decide_grant_request("req-1", "denied")
    with pytest.raises(VaultError, match="no longer waiting"):
        vault.grant(vault.local_user_id, AGENT, "npm_token", "npm", deciding="req-1")
    assert vault.grants(client_id=AGENT) == []
    with pytest.raises(VaultError, match="was already denied"):
        decisions.approve(vault, "req-1", "npm", by="dashboard")
    assert vault.grants(client_id=AGENT) == []


def test_approving_grants_and_decides_in_one_step(vault: Vault) -> None:
    waiting(vault)
    grant = decisions.approve(vault, "req-1", "npm", by="command_line")
    assert (grant.client_id, grant.variable, grant.secret_name) == (AGENT, "npm_token", "npm")
    stored = vault.grant_request("req-1")
    assert stored is not None and stored.outcome == "granted"
    with pytest.raises(VaultError, match="was already granted"):
        decisions.deny(vault, "req-1", by="dashboard")


def test_removing_an_agent_takes_its_waiting_requests_back(vault: Vault) -> None:
    """An agent registered again under the same id must not inherit what was asked before."""
    waiting(vault)
    vault.remove_agent(AGENT)
    vault.add_agent(AGENT, None, owner_user_id=vault.local_user_id, variables=["readme"])
    assert vault.grant_requests() == []
    with pytest.raises(VaultError, match="was already expired"):
        decisions.approve(vault, "req-1", "npm", by="dashboard")
    assert vault.grants(client_id=AGENT) == []


def test_an_agent_has_a_bounded_number_of_waiting_requests(vault: Vault) -> None:
    for n in range(MAX_WAITING_REQUESTS):
        waiting(vault, f"req-{n}")
    with pytest.raises(VaultError, match="waiting already; decide them first"):
        waiting(vault, "one-too-many")
    waiting(vault, "another-agents", agent="local-agent")  # each agent has its own bound
    vault.decide_grant_request("req-0", "expired")
    waiting(vault, "room-again")


def test_a_request_whose_server_is_gone_waits_no_more(vault: Vault, gone: str) -> None:
    waiting(vault, "req-mine", raised_by=identity())
    waiting(vault, "req-orphan", raised_by=gone)
    assert [r.request_id for r in vault.grant_requests()] == ["req-mine"]
    with pytest.raises(VaultError, match="the server whose call raised it stopped") as said:
        decisions.approve(vault, "req-orphan", "npm", by="dashboard")
    assert "local grant ci-bot npm_token SECRET" in str(said.value)
    with pytest.raises(VaultError, match="the server whose call raised it stopped"):
        decisions.deny(vault, "req-orphan", by="command_line")
    assert vault.grants(client_id=AGENT) == []


def test_orphaned_requests_do_not_count_against_the_bound(vault: Vault, gone: str) -> None:
    for n in range(MAX_WAITING_REQUESTS):
        waiting(vault, f"req-{n}", raised_by=gone)
    waiting(vault, "a-live-one", raised_by=identity())


def test_the_vaults_fingerprint_changes_when_a_requests_server_is_gone(tmp_path: Path) -> None:
    """The dashboard's grants page redraws without the orphan, though no row changed."""
    vault, _ = Vault.init(tmp_path / "piper-home")
    vault.add_agent(AGENT, None, owner_user_id=vault.local_user_id, variables=["npm_token"])
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        waiting(vault, raised_by=identity(server.pid))
        before = vault.fingerprint()
        assert [r.request_id for r in vault.grant_requests()] == ["req-1"]
    finally:
        server.kill()
        server.wait()
    assert vault.grant_requests() == []
    assert vault.fingerprint() != before
    vault.close()


def test_a_request_id_can_be_given_on_the_command_line() -> None:
    """`piper-mcp local approve ID SECRET`: an id starting with "-" would read as a flag."""
    from piper_mcp.local.grant_requests import GrantRequest

    ids = [GrantRequest(AGENT, "npm_token", "Host").request_id for _ in range(2000)]
    assert not [request_id for request_id in ids if request_id.startswith("-")]
    assert len(set(ids)) == len(ids)
