"""Grant requests waiting for the user: what a model asked for and the one-time link to decide it.

When an MCP client asks for a variable the local vault has not granted, the server
opens a `GrantRequest` and sends the user (through URL-mode elicitation) to its
page on the local backend. The link is unguessable and works once: opening it hands
the browser a session cookie and a CSRF token bound to this request, and only a form
posted with both decides it. The link's secrets live in this process's memory only;
the request itself is also kept in the vault (`keep_in`), where the dashboard and
`piper-mcp local requests` (other processes) see and decide it. The server that
opened one waits for either and then retries the call once.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from piper_mcp.local.errors import VaultError
from piper_mcp.local.vault import MAX_WAITING_REQUESTS, StoredGrantRequest

if TYPE_CHECKING:
    from piper_mcp.local.vault import Vault

# Long enough for a user to find the page and choose; as long as the SDK keeps a
# 2026-07-28 call's request state, so a retried call still finds its request.
REQUEST_LIFETIME = 600.0
MAX_CLIENT_NAME = 200  # the client's name as it calls itself, kept and shown

Outcome = Literal["granted", "denied", "expired"]


def _token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class GrantRequest:
    """One agent's request for one variable, and what the user decided."""

    agent_id: str
    variable: str
    client: str
    # "req-" first: a bare token may begin with "-", which `local approve ID` reads as a flag.
    request_id: str = field(default_factory=lambda: "req-" + secrets.token_urlsafe(12))
    key: str = field(default_factory=_token, repr=False)  # the one-time link's secret
    opened_at: float = field(default_factory=time.monotonic)
    session: str | None = field(default=None, repr=False)  # the cookie of whoever opened it
    csrf: str | None = field(default=None, repr=False)
    outcome: Outcome | None = None

    def expired(self) -> bool:
        return time.monotonic() - self.opened_at > REQUEST_LIFETIME


class LinkProblem(Exception):
    """Why a grant page cannot be shown or a decision not taken; the text is for the user."""


class GrantRequests:
    """The open requests of one server; the page (a uvicorn thread) and the calls share it."""

    def __init__(self) -> None:
        self._requests: dict[str, GrantRequest] = {}
        self._lock = threading.Lock()
        self._vault: Vault | None = None

    def keep_in(self, vault: Vault) -> None:
        """Keep the requests opened from now on in `vault` too, for other processes to decide."""
        self._vault = vault

    def open(self, agent_id: str, variable: str, client: str) -> GrantRequest:
        """A new request; kept in the vault, a write: call it off the event loop.

        `VaultError` when `MAX_WAITING_REQUESTS` of this server wait already: a model calling
        in a loop never pushes out the request the user is deciding.
        """
        with self._lock:
            self._forget_expired()
            waiting = [r for r in self._requests.values() if r.outcome is None]
            if len(waiting) >= MAX_WAITING_REQUESTS:
                raise VaultError(
                    f"{len(waiting)} grant requests of this server are waiting already; "
                    "decide them first"
                )
            # Decided ones are kept while they last (a retried call finds its answer there),
            # the oldest of them making room.
            decided = [i for i, r in self._requests.items() if r.outcome is not None]
            for request_id in decided[: max(0, len(self._requests) - 2 * MAX_WAITING_REQUESTS)]:
                del self._requests[request_id]
        request = GrantRequest(agent_id, variable, client[:MAX_CLIENT_NAME])
        if self._vault is not None:
            from piper_mcp.local.running import identity

            now = time.time()
            self._vault.open_grant_request(
                StoredGrantRequest(
                    request.request_id,
                    agent_id,
                    variable,
                    request.client,
                    now,
                    now + REQUEST_LIFETIME,
                    None,
                    None,
                    identity(),
                )
            )
        with self._lock:
            self._requests[request.request_id] = request
        return request

    def withdraw(self, request: GrantRequest) -> None:
        """The call no longer waits (declined, timed out, the server stopping): the request
        goes from the page, the dashboard and `local requests`."""
        with self._lock:
            if request.outcome is None:
                request.outcome = "expired"
            request.session = request.csrf = None
            request.key = ""
        if self._vault is not None:
            self._vault.decide_grant_request(request.request_id, "expired")

    def withdraw_all(self) -> None:
        """Withdraw every waiting request; where the vault takes no write (a full disk, as
        the server stops), they are left to expire by themselves."""
        with self._lock:
            waiting = [r for r in self._requests.values() if r.outcome is None]
        try:
            for request in waiting:
                self.withdraw(request)
        except (VaultError, sqlite3.Error):
            pass

    def outcome(self, request: GrantRequest) -> Outcome | None:
        """What the user decided: on this server's page, or in the vault (the dashboard,
        `piper-mcp local approve`/`deny`)."""
        if request.outcome is None and self._vault is not None:
            stored = self._vault.grant_request(request.request_id)
            if stored is not None and stored.outcome in ("granted", "denied"):
                with self._lock:
                    request.outcome = "granted" if stored.outcome == "granted" else "denied"
                    request.session = request.csrf = None
        return request.outcome

    def find(self, request_id: str) -> GrantRequest | None:
        with self._lock:
            request = self._requests.get(request_id)
        return request if request is not None and not request.expired() else None

    def open_page(self, request_id: str, key: str) -> tuple[GrantRequest, str]:
        """Spend the link's key: the request and a new session for the browser that opened it."""
        with self._lock:
            request = self._requests.get(request_id)
            if request is None or request.expired() or not request.key:
                raise LinkProblem(_NO_LINK)
            if not _same(request.key, key):
                raise LinkProblem(_NO_LINK)
        if (outcome := self.outcome(request)) is not None:
            raise LinkProblem(f"This request was already {outcome}.")
        with self._lock:
            if not request.key:
                raise LinkProblem(_NO_LINK)
            request.key = ""  # one use
            session = _token()
            request.session, request.csrf = session, _token()
        return request, session

    def session_request(self, request_id: str, session: str, csrf: str | None) -> GrantRequest:
        """The request a page posted to, if `session` opened it and `csrf` is its token."""
        request = self.find(request_id)
        if (
            request is None
            or request.session is None
            or request.csrf is None
            or not _same(request.session, session)
            or csrf is None
            or not _same(request.csrf, csrf)
        ):
            raise LinkProblem(_NO_SESSION)
        if (outcome := self.outcome(request)) is not None:
            raise LinkProblem(f"This request was already {outcome}.")
        return request

    def decide(self, request: GrantRequest, outcome: Outcome, *, recorded: bool = False) -> None:
        """Record the page's decision; `LinkProblem` if it was decided elsewhere first.

        `recorded`: the vault has it already (a grant made with `deciding=`)."""
        if (
            self._vault is not None
            and not recorded
            and not self._vault.decide_grant_request(request.request_id, outcome)
        ):
            raise LinkProblem(f"This request was already {self.outcome(request) or 'expired'}.")
        with self._lock:
            request.outcome = outcome
            request.session = request.csrf = None

    def _forget_expired(self) -> None:
        for request_id in [i for i, r in self._requests.items() if r.expired()]:
            del self._requests[request_id]


def _same(ours: str, given: str) -> bool:
    """A constant-time compare of what the browser sent, which may be any text."""
    return secrets.compare_digest(ours.encode(), given.encode("utf-8", "replace"))


_NO_LINK = (
    "This grant link is not valid: it was already used, it expired, or it was mistyped. "
    "Ask the agent to try again for a new link, or grant with `piper-mcp local grant`."
)
_NO_SESSION = (
    "This page was not opened from its grant link in this browser, or it was already "
    "submitted. Open the link the MCP client showed you again, or ask the agent to try again."
)
