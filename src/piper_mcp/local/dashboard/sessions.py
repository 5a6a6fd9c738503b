"""Who may use the dashboard: the browser that opened its one-time login link.

`piper-mcp local dashboard` prints one link with an unguessable token. Opening it
spends the token and starts a session: a random id in a cookie (HttpOnly,
SameSite=Strict) and a CSRF token that every form carries. There is no other way
in: no password, no second link; a lost session needs a restarted dashboard. Only
hashes of the token and the session ids are kept, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "piper_dashboard"
# A working day; the dashboard is restarted for a new link after that.
SESSION_LIFETIME = 12 * 3600.0
MAX_SESSIONS = 8  # one person's browsers; the oldest make room


def _hashed(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    started_at: float = 0.0
    # One message for the next page shown: what an action did, or why it did not.
    notice: tuple[str, str] | None = None  # (kind: "done" | "problem", text)

    def take_notice(self) -> tuple[str, str] | None:
        notice, self.notice = self.notice, None
        return notice

    def csrf_matches(self, token: str | None) -> bool:
        # As bytes: compare_digest refuses str beyond ASCII, which a form can send.
        given = (token or "").encode("utf-8", "replace")
        return token is not None and hmac.compare_digest(self.csrf.encode(), given)


class LoginRefused(Exception):
    """The login link cannot start a session; the text is for the user."""


class Sessions:
    """The login token of one dashboard run, and the sessions it started."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.login_token = secrets.token_urlsafe(32)  # printed once, in the login link
        self._login_hash: bytes | None = _hashed(self.login_token)
        self._sessions: dict[bytes, Session] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def log_in(self, token: str) -> str:
        """Spend the login token: a new session's id, for the cookie."""
        with self._lock:
            if self._login_hash is None:
                raise LoginRefused(
                    "This login link was used already: it works once. Stop the dashboard "
                    "and start it again for a new link."
                )
            if not hmac.compare_digest(self._login_hash, _hashed(token)):
                raise LoginRefused(
                    "This login link is not right. Open the link the dashboard printed "
                    "when it started."
                )
            self._login_hash = None
            session_id = secrets.token_urlsafe(32)
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[_hashed(session_id)] = Session(started_at=self._clock())
        return session_id

    def find(self, session_id: str | None) -> Session | None:
        """The live session `session_id` names, or None."""
        if not session_id:
            return None
        key = _hashed(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and self._clock() - session.started_at > SESSION_LIFETIME:
                del self._sessions[key]
                return None
        return session
