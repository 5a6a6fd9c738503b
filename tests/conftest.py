"""Shared fixtures: an isolated environment, a seeded vault and a running local Piper."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from piper_mcp.local.server_thread import LocalBackend, ServerThread, Site
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind, url_of

AGENT_ID = "agent-research"
AGENT_SECRET = "agent-client-secret-canary-7f3a-5d1c9e"
USER_ID = "user-ada"
INSTANCE_ID = "instance-ada-laptop"
OWNER_ID = "user-agent-owner"
OPENAI_SECRET = "Ada's OpenAI key"
OPENAI_VALUE = "sk-canary-openai-value-91c2"
DB_SECRET = "Ada's database"
DB_VALUE = "postgres://ada:canary-db-pw@db.example/prod"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer login, no real Google, no stray PIPER_* setting reaches a test."""
    for name in list(os.environ):
        if name.startswith(("PIPER_", "GOOGLE_", "CLOUDSDK_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(home / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    # Every call reaches Piper, so tests can count round trips; the STS cache has its own
    # tests, which turn it back on.
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", "0")
    return home


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def seeded_vault(home: Path) -> Vault:
    """Ada has Piper Link signed in; she granted the research agent her OpenAI key and DB URL.

    The research agent has a client secret (v1) and its operator allowed v2 for it too.
    """
    vault, _ = Vault.init(home)
    vault.add_instance(INSTANCE_ID, USER_ID)
    vault.add_agent(
        AGENT_ID,
        AGENT_SECRET,
        owner_user_id=OWNER_ID,
        variables=["OpenAI API Key", "database_url", "slack_token"],
    )
    # The operator allows protocol v2 for it, so the tests can speak both generations;
    # tests/attacks/test_agent_impersonation.py covers agents without this.
    vault.set_secretless(AGENT_ID, True)
    vault.put_secret(OPENAI_SECRET, OPENAI_VALUE, owner_user_id=USER_ID)
    vault.put_secret(DB_SECRET, DB_VALUE, owner_user_id=USER_ID)
    vault.grant(USER_ID, AGENT_ID, "OpenAI API Key", OPENAI_SECRET)
    vault.grant(USER_ID, AGENT_ID, "database_url", DB_SECRET)
    return vault


@pytest.fixture
def piper(tmp_path: Path) -> Iterator[LocalBackend]:
    """The local backend with Ada's vault, playing Piper Link for her too."""
    with LocalBackend(seeded_vault(tmp_path / "vault"), instance_id=INSTANCE_ID) as backend:
        yield backend


def credential_id(piper: LocalBackend, secret_name: str) -> str:
    found = piper.vault.find_secret(secret_name)
    assert found is not None
    return found.secret_id


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def protocol_version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def client_kwargs(piper: LocalBackend, protocol_version: int) -> dict[str, object]:
    """SDK-style arguments for the research agent, in protocol v1 or v2."""
    kwargs: dict[str, object] = {"client_id": AGENT_ID, **piper.client_settings()}
    if protocol_version == 1:
        kwargs["client_secret"] = AGENT_SECRET
    return kwargs


@pytest.fixture
def serve() -> Iterator[object]:
    """Serve any ASGI app on a loopback port for one test: `url = serve(app)`."""
    running: list[ServerThread] = []

    def start(app: object) -> str:
        site = Site(app, bind("127.0.0.1", 0))
        server = ServerThread([site])
        server.start()
        running.append(server)
        return url_of(site.sock)

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def unused_link_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    sock = bind("127.0.0.1", 0)
    url = url_of(sock) + "/piper-link-context"
    sock.close()
    return url
