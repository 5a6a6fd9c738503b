"""`serve --local`: the MCP server backed by a local Piper in this process.

Opens (or creates) the vault in PIPER_HOME and configures the Piper client to
act as one of the vault's agents over protocol v2, answered in-process: the
Piper functions and Link have no port another process could use. Only the
Secret Manager read route (for the STS tokens handed out) listens on loopback.
Grants made with `piper-mcp local ...` in another terminal apply on the next call.

`serve` opens the vault in a background thread while it answers `initialize`; what
needs the vault awaits `ready()`, and a vault that cannot be opened stops the server
with its one-line error. Every message names the vault's path: a host that starts the
server without the user's PIPER_HOME serves another vault.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from piper_mcp.home import DEFAULT_AGENT, default_home
from piper_mcp.invocation import first_steps
from piper_mcp.local.advice import how_to_grant, no_agent, no_vault
from piper_mcp.local.embedded import client_settings
from piper_mcp.local.errors import VaultError
from piper_mcp.local.files import DATABASE_FILE, check_home
from piper_mcp.local.grant_requests import GrantRequest, GrantRequests
from piper_mcp.local.running import RunningProcess, announce, withdraw
from piper_mcp.network import bind, url_of
from piper_mcp.piper import load_settings
from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.piper.settings import DEFAULT_PROJECT_ID
from piper_mcp.piper.wire import new_http_client
from piper_mcp.server.credentials import GrantLink, GrantRequestRefused

if TYPE_CHECKING:
    from piper_mcp.local.embedded import EmbeddedPiper
    from piper_mcp.piper import PiperGrantNeededError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalGrants:
    """Grants made in a local vault: with `piper-mcp local grant` naming the agent, or, while
    a call waits, on the grant page this server serves (`page_url`) for its open `requests`.
    """

    vault: Path
    agent_id: str
    requests: GrantRequests
    page_url: str
    POLL_SECONDS = 0.25  # a grant made with the CLI meanwhile is noticed this soon

    def how_to_grant(self, variable: str, error: PiperGrantNeededError) -> str:
        return self.how_to_declare(variable)

    def request_grant(self, variable: str, client: str, error: PiperGrantNeededError) -> GrantLink:
        try:
            request = self.requests.open(self.agent_id, variable, client)
        except VaultError as refused:
            raise GrantRequestRefused(f"No grant link this time: {refused}.") from None
        url = f"{self.page_url}/grant/{request.request_id}?key={request.key}"
        return self._link(request, url)

    def withdraw(self, link: GrantLink) -> None:
        if (request := self.requests.find(link.reference)) is not None:
            self.requests.withdraw(request)

    def link_for(self, reference: str) -> GrantLink | None:
        request = self.requests.find(reference)
        return self._link(request, "") if request is not None else None

    def _link(self, request: GrantRequest, url: str) -> GrantLink:
        return GrantLink(
            url, request.request_id, lambda: self.requests.outcome(request), self.POLL_SECONDS
        )

    def how_to_declare(self, variable: str | None) -> str:
        return how_to_grant(self.vault, self.agent_id, variable)


class LocalPiper:
    """The local vault's backend for one agent, and the Piper client settings that reach it.

    Built at once (it only binds the Secret Manager port); `open()` or
    `open_in_background()` then opens the vault and starts the backend. `loopback`:
    whether to serve that port (STS token reads, the grant page); `exec`, which hands
    out raw values only and then becomes another program, needs neither.
    """

    def __init__(self, agent_id: str, *, loopback: bool = True) -> None:
        self.agent_id = agent_id
        self.loopback = loopback
        self.home = default_home()
        self._sock = bind("127.0.0.1", 0)
        self.settings = load_settings(
            client_id=agent_id,
            client_secret=None,  # protocol v2, in-process: no other process can send it
            client_secret_name=None,
            instance_id=None,
            **client_settings(url_of(self._sock), DEFAULT_PROJECT_ID),
        )
        self.grant_requests = GrantRequests()
        self.grants = LocalGrants(self.home, agent_id, self.grant_requests, url_of(self._sock))
        self._backend: Future[EmbeddedPiper] = Future()
        self._opener: threading.Thread | None = None
        self._declared: tuple[object, list[str]] = (None, [])
        self._announced: Path | None = None

    def open(self) -> LocalPiper:
        """Open the vault and start the backend in this thread; `VaultError` if it cannot.

        Creates no vault: what only looks (`check`) changes nothing.
        """
        self._open(create=False)
        self._backend.result()
        return self

    def open_in_background(self) -> LocalPiper:
        """Open the vault, creating it the first time, and start the backend in a thread."""
        self._opener = threading.Thread(
            target=self._open, args=(True,), name="piper-mcp vault", daemon=True
        )
        self._opener.start()
        return self

    async def ready(self) -> EmbeddedPiper:
        """The running backend, once the vault is open; raises what stopped it opening."""
        if not self._backend.done():
            # Shielded: a waiter cancelled (the server stopping) must not cancel the
            # opening, which the thread still finishes and `stop()` then closes.
            return await asyncio.shield(asyncio.wrap_future(self._backend))
        return self._backend.result()

    def failure(self) -> BaseException | None:
        """What stopped the vault opening (after waiting for it), or None."""
        return self._backend.exception()

    def http_client(self) -> httpx.AsyncClient:
        """A Piper client's HTTP client answered in-process, by the backend once it is ready."""
        return new_http_client(transport=httpx.ASGITransport(app=self._in_process))

    async def _in_process(self, scope: Any, receive: Any, send: Any) -> None:
        await (await self.ready()).in_process(scope, receive, send)

    def declared(self) -> list[str]:
        """The agent's declared variables, read again only when the vault has changed."""
        vault = self._backend.result().vault
        version = vault.version()
        seen, variables = self._declared
        if version != seen:
            agent = vault.agent(self.agent_id)
            variables = list(agent.variables) if agent else []
            self._declared = (version, variables)
        return list(variables)

    def stored_rule(self, variable: str) -> str | None:
        """The API rule the agent's grant of `variable` carries (JSON), if any."""
        vault = self._backend.result().vault
        grant = vault.grant_for(
            vault.local_user_id, self.agent_id, normalize_variable_name(variable)
        )
        return grant.api_rule if grant is not None else None

    def stop(self) -> None:
        if self._opener is not None:
            self._opener.join()
        withdraw(self._announced)
        if self._backend.done() and self._backend.exception() is None:
            self.grant_requests.withdraw_all()  # their calls end with this server
            backend = self._backend.result()
            backend.stop()
            backend.vault.close()
        else:
            self._sock.close()

    def _open(self, create: bool) -> None:
        try:
            self._backend.set_result(self._start_backend(create))
        except BaseException as error:  # handed to whoever waits for the backend
            self._backend.set_exception(error)

    def _start_backend(self, create: bool) -> EmbeddedPiper:
        from piper_mcp.local.embedded import EmbeddedPiper
        from piper_mcp.local.vault import Vault

        check_home(self.home)  # one line for a PIPER_HOME this user cannot use
        if not (self.home / DATABASE_FILE).exists() and (
            not create or self.agent_id != DEFAULT_AGENT  # a new vault has only that agent
        ):
            raise VaultError(self._no_vault())
        vault, created = Vault.init(self.home) if create else (Vault.open(self.home), False)
        try:
            vault.check()  # a damaged vault is one line at start, not a failure on every call
            if created:
                print(
                    f"piper-mcp: created a local Piper vault in {self.home} with the agent "
                    f"{DEFAULT_AGENT!r}. Give it a secret:\n{first_steps(DEFAULT_AGENT)}",
                    file=sys.stderr,
                )
            agent = vault.agent(self.agent_id)
            if agent is None:
                raise VaultError(self._no_agent([known.client_id for known in vault.agents()]))
            self.grant_requests.keep_in(vault)  # the dashboard decides them too
            backend = EmbeddedPiper(
                vault, self.agent_id, sock=self._sock, grant_requests=self.grant_requests
            )
            if self.loopback:
                backend.start()
                self._announced = announce(
                    self.home,
                    RunningProcess(
                        "serve --local",
                        addresses={"Secret Manager reads": backend.secret_manager_url},
                        details={"agent": self.agent_id},
                    ),
                )
        except BaseException:
            vault.close()
            raise
        logger.info(
            "Local Piper for agent %r in-process, vault %s; Secret Manager reads at %s",
            self.agent_id,
            self.home,
            backend.secret_manager_url,
        )
        if not agent.variables:
            logger.warning("No variables are declared yet. %s", self.grants.how_to_declare(None))
        return backend

    def _no_vault(self) -> str:
        return no_vault(self.home, self.agent_id)

    def _no_agent(self, agents: list[str]) -> str:
        """The agents there are instead (and the likely one meant), not how to add the typo."""
        return no_agent(self.home, self.agent_id, agents)
