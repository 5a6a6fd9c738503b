"""The two audit trails as one timeline: what the MCP server gave models, what the backend did.

The MCP server's trail (`audit.jsonl`: each tool call or `exec` injection, what the
model got, whether consent was asked and given) and the vault's audit table (each
backend request, and each decision on the grant page, the dashboard or the command
line) become `Event`s, newest last, filtered by agent, variable, outcome and window.
Neither trail holds a secret value, and nothing here adds one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piper_mcp.piper import protocol_names
from piper_mcp.printable import printable

# How far back the activity page looks, and how many entries of each trail it reads.
WINDOWS = {"hour": 3600.0, "day": 86_400.0, "week": 7 * 86_400.0}
ENTRIES_READ = 5000

# What the model got, by the server trail's `mode`.
GOT = {"token": "STS token", "value": "raw value", "call": "brokered call"}
# The vault's actions, as people call them; their subject starts with the variable.
BACKEND_ACTIONS = {
    protocol_names.TOKEN_FUNCTION: "agent token",
    protocol_names.RESOLVE_MAPPING_FUNCTION: "variable resolved",
    protocol_names.GET_SCOPED_FUNCTION: "STS token minted",
    protocol_names.EXCHANGE_SECRET_FUNCTION: "raw value exchanged",
    "secretmanager.access": "Secret Manager read",
    "unproven": "request without proof",
    "grant_page": "decided on the grant page",
    "dashboard": "grant changed in the dashboard",
    "dashboard_secret": "secret changed in the dashboard",
    "command_line": "grant changed on the command line",
    "command_line_secret": "secret changed on the command line",
}
NAMES_A_VARIABLE = frozenset(
    {protocol_names.RESOLVE_MAPPING_FUNCTION, "grant_page", "dashboard", "command_line"}
)


@dataclass(frozen=True)
class Event:
    at: float  # seconds since the epoch
    source: str  # "MCP server" or "backend"
    agent: str
    variable: str
    what: str  # what happened, or what the model got
    client: str
    consent: str  # "asked, given", "asked, refused", "not asked", or ""
    outcome: str
    detail: str

    @property
    def tone(self) -> str:
        """The outcome's colour class: ok, refused (a policy said no), failed (something broke)."""
        if self.outcome in SUCCESSES:
            return "ok"
        if self.outcome in FAILURES or self.outcome.startswith("http_5"):
            return "failed"
        return "refused"


@dataclass(frozen=True)
class Trails:
    """Both trails' events as read at `state` (`Dashboard._state`), and what went wrong."""

    state: str
    server: list[Event]
    backend: list[Event]
    problem: str | None  # why the MCP server's trail could not be read
    skipped: int  # its lines that were not entries


@dataclass(frozen=True)
class Filters:
    agent: str = ""
    variable: str = ""
    outcome: str = ""  # a tone: ok, refused, failed; "" for all
    window: str = "day"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        window = query.get("window", "day")
        return cls(
            agent=query.get("agent", "")[:200],
            variable=query.get("variable", "")[:200],
            outcome=query.get("outcome", "") if query.get("outcome") in TONES else "",
            window=window if window in WINDOWS else "day",
        )

    def keeps(self, event: Event, since: float) -> bool:
        return (
            event.at >= since
            and (not self.agent or event.agent == self.agent)
            and (not self.variable or event.variable == self.variable)
            and (not self.outcome or event.tone == self.outcome)
        )


TONES = ("ok", "refused", "failed")
FAILURES = frozenset({"storage_unavailable", "error", "unknown"})
# The user's own changes (the dashboard, the grant page, the command line) went as asked.
SUCCESSES = frozenset({"ok", "granted", "stored", "replaced", "removed", "revoked"})


def from_server(entries: Iterable[dict[str, Any]]) -> list[Event]:
    events = []
    for entry in entries:
        try:
            at = datetime.fromisoformat(str(entry["time"])).timestamp()
        except (KeyError, ValueError):
            continue  # not an entry this version can place in time
        asked, given = entry.get("consent_asked"), entry.get("consent_given")
        mode = str(entry.get("mode") or "")
        what = (
            "exec: raw value into " + _text(entry.get("command"))
            if mode == "value" and (entry.get("transport") == "exec")
            else GOT.get(mode, mode)
        )
        detail = [_text(entry.get("reason"))]
        if entry.get("host"):
            detail.append(
                f"{_text(entry.get('method'))} {_text(entry.get('host'))} → "
                f"{_text(entry.get('status'))}"
            )
        events.append(
            Event(
                at=at,
                source="MCP server",
                agent=_text(entry.get("agent")),
                variable=_text(entry.get("variable")),
                what=what,
                client=_text(entry.get("client")),
                consent=("asked, given" if given else "asked, refused") if asked else "not asked",
                outcome=_text(entry.get("outcome")) or "unknown",
                detail="; ".join(part for part in detail if part),
            )
        )
    return events


def from_vault(rows: Iterable[Any]) -> list[Event]:
    """Events of the vault's audit rows (`AuditEntry`)."""
    events = []
    for row in rows:
        subject = _text(row.subject)
        names_variable = row.action in NAMES_A_VARIABLE
        events.append(
            Event(
                at=row.at,
                source="backend",
                agent=_text(row.client_id),
                variable=subject.split(" ", 1)[0] if names_variable else "",
                what=BACKEND_ACTIONS.get(row.action, row.action),
                client="",
                consent="",
                outcome=_text(row.outcome),
                detail=" ".join(
                    part
                    for part in (
                        subject.partition(" ")[2] if names_variable else subject,
                        _text(row.reason),
                    )
                    if part
                ),
            )
        )
    return events


def timeline(
    server: list[Event], backend: list[Event], filters: Filters, now: float | None = None
) -> tuple[list[Event], float]:
    """The events `filters` keeps, oldest first, and where its window starts."""
    since = (time.time() if now is None else now) - WINDOWS[filters.window]
    kept = [event for event in server + backend if filters.keeps(event, since)]
    return sorted(kept, key=lambda event: event.at), since


def _text(value: object) -> str:
    """A trail's field as shown: control and bidi characters escaped, cut at 200 characters."""
    return "" if value is None else printable(str(value)[:200])
