"""Shared fixtures: an isolated environment, a seeded vault and a running local Piper."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from piper_mcp.local.link import link_app
from piper_mcp.local.server_thread import LocalBackend, ServerThread, Site
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind, url_of
from piper_mcp.piper import protocol_names

AGENT_ID = "agent-research"  # secretless: protocol v2, which its operator allowed
V1_AGENT_ID = "agent-research-v1"  # the same agent's twin with a client secret: protocol v1
AGENT_SECRET = "agent-client-secret-canary-7f3a-5d1c9e"
USER_ID = "user-ada"
INSTANCE_ID = "instance-ada-laptop"
OWNER_ID = "user-agent-owner"
OPENAI_SECRET = "Ada's OpenAI key"
OPENAI_VALUE = "sk-canary-openai-value-91c2"
DB_SECRET = "Ada's database"
DB_VALUE = "postgres://ada:canary-db-pw@db.example/prod"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the programs the tests start, as it does when a host or a shell starts them.

    The suite may itself run with SIGINT ignored (a background job of a non-interactive
    shell, a CI runner), and an ignored signal stays ignored in every program it starts:
    the tests of what Ctrl-C does would then test nothing.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The screenshots the browser tests saved (from every worker), listed at the end."""
    saved = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "screenshot"
    ]
    if saved:
        terminalreporter.section("screenshots")
        for path in saved:
            terminalreporter.line(str(path))


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

    The research agent comes twice, so the tests can speak both protocol generations:
    secretless (`AGENT_ID`, v2, which its operator allowed) and with a client secret
    (`V1_AGENT_ID`, v1 only); tests/attacks/test_agent_impersonation.py covers the rest.
    """
    vault, _ = Vault.init(home)
    vault.add_instance(INSTANCE_ID, USER_ID)
    vault.put_secret(OPENAI_SECRET, OPENAI_VALUE, owner_user_id=USER_ID)
    vault.put_secret(DB_SECRET, DB_VALUE, owner_user_id=USER_ID)
    for agent_id, secret in ((AGENT_ID, None), (V1_AGENT_ID, AGENT_SECRET)):
        vault.add_agent(
            agent_id,
            secret,
            owner_user_id=OWNER_ID,
            variables=["OpenAI API Key", "database_url", "slack_token"],
            secretless=secret is None,
        )
        vault.grant(USER_ID, agent_id, "OpenAI API Key", OPENAI_SECRET)
        vault.grant(USER_ID, agent_id, "database_url", DB_SECRET)
    return vault


class Loopback:
    """One uvicorn thread on a loopback port, serving the app of whichever test holds it.

    Stopping uvicorn takes a fifth of a second of fixed sleeps; a few of these, shared
    by the session, spare each test that (see `LoopbackPool`).
    """

    def __init__(self) -> None:
        self.app: Any = None
        self.url = ""
        self._in_flight = 0
        self._idle = threading.Condition()
        sock = bind("127.0.0.1", 0)
        self.url = url_of(sock)
        self._server = ServerThread([Site(self, sock)])
        self._server.start()
        self.running = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self.app
        if app is None:  # a request after its test ended: nobody answers it
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        with self._idle:
            self._in_flight += 1
        try:
            await app(scope, receive, send)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drained(self, timeout: float) -> bool:
        """Wait until no request is being served (its app may then be closed)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def stop(self) -> None:
        """Stop serving: the port refuses connections from now on."""
        if self.running:
            self.running = False
            self._server.stop()


class LoopbackPool:
    """`with pool.serving(app) as loopback:` serves `app` at `loopback.url` for a while."""

    def __init__(self) -> None:
        self._idle: list[Loopback] = []
        self._all: list[Loopback] = []

    def take(self, app: Any) -> Loopback:
        loopback = self._idle.pop() if self._idle else Loopback()
        if loopback not in self._all:
            self._all.append(loopback)
        loopback.app = app
        return loopback

    def give_back(self, loopback: Loopback) -> None:
        """After the requests in flight end (a hung one ends when its client hangs up)."""
        drained = loopback.drained(timeout=10)
        loopback.app = None
        if loopback.running and drained:
            self._idle.append(loopback)
        else:
            loopback.stop()

    def close(self) -> None:
        for loopback in self._all:
            loopback.stop()


@pytest.fixture(scope="session")
def loopback_pool() -> Iterator[LoopbackPool]:
    pool = LoopbackPool()
    yield pool
    pool.close()


class PooledBackend(LocalBackend):
    """A LocalBackend whose two ports are pooled loopback servers, not a uvicorn of its own.

    `stop()` stops them for real, for the tests of a backend that goes away.
    """

    def __init__(self, vault: Vault, pool: LoopbackPool) -> None:
        super().__init__(vault, instance_id=INSTANCE_ID)  # its own ports are never served
        self._pool = pool
        self._loopbacks = [pool.take(self.app.asgi), pool.take(link_app(INSTANCE_ID))]
        self.base_url = self._loopbacks[0].url
        self.link_url = self._loopbacks[1].url + protocol_names.LINK_CONTEXT_PATH
        self._closed = False

    def start(self) -> PooledBackend:
        return self

    def stop(self) -> None:
        for loopback in self._loopbacks:
            loopback.stop()
        self.release()

    def release(self) -> None:
        if not self._closed:
            self._closed = True
            for loopback in self._loopbacks:
                self._pool.give_back(loopback)
            super().stop()


@pytest.fixture
def piper(tmp_path: Path, loopback_pool: LoopbackPool) -> Iterator[LocalBackend]:
    """The local backend with Ada's vault, playing Piper Link for her too."""
    backend = PooledBackend(seeded_vault(tmp_path / "vault"), loopback_pool)
    try:
        yield backend
    finally:
        backend.release()


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
        kwargs.update(client_id=V1_AGENT_ID, client_secret=AGENT_SECRET)
    return kwargs


@pytest.fixture
def serve(loopback_pool: LoopbackPool) -> Iterator[object]:
    """Serve any ASGI app on a loopback port for one test: `url = serve(app)`."""
    taken: list[Loopback] = []

    def start(app: object) -> str:
        taken.append(loopback_pool.take(app))
        return taken[-1].url

    yield start
    for loopback in taken:
        loopback_pool.give_back(loopback)


def refusing_port() -> socket.socket:
    """A loopback port held but not listening: connecting is refused, and no other test's
    server can take the port while the socket is open (a closed one could be)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def unused_link_url() -> Iterator[str]:
    """A loopback URL where nothing listens, for the whole test."""
    with refusing_port() as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/piper-link-context"
