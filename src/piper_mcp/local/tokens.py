"""Tokens the local backend issues: random, expiring, bound to what they allow.

An agent token is bound to the agent's registration (a removed and re-added
agent does not inherit it); an STS token to the grants it was minted under (a
revoked grant's tokens stay dead, even when the variable is granted again).

Only a SHA-256 digest of each token is kept, so a memory dump or a stored
copy does not hand out working tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

AGENT_TOKEN_TTL_SECONDS = 3600
STS_TOKEN_TTL_SECONDS = 3600


@dataclass(frozen=True)
class AgentToken:
    client_id: str
    user_id: str
    audience: str  # the path of the one function it may call
    agent_registered_at: float
    expires_at: float


@dataclass(frozen=True)
class StsToken:
    client_id: str
    user_id: str
    grant_ids: dict[str, str]  # credential id → the id of the grant that allowed it
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIssuer:
    def __init__(
        self,
        *,
        agent_ttl: int = AGENT_TOKEN_TTL_SECONDS,
        sts_ttl: int = STS_TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_ttl = agent_ttl
        self.sts_ttl = sts_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._agent_tokens: dict[str, AgentToken] = {}
        self._sts_tokens: dict[str, StsToken] = {}

    def issue_agent_token(
        self, client_id: str, user_id: str, audience: str, *, agent_registered_at: float
    ) -> str:
        token = "piper-agent-" + secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._agent_tokens[_digest(token)] = AgentToken(
                client_id, user_id, audience, agent_registered_at, self._clock() + self.agent_ttl
            )
        return token

    def issue_sts_token(self, client_id: str, user_id: str, grant_ids: dict[str, str]) -> str:
        """A token that reads each credential in `grant_ids` while that very grant lasts."""
        token = "piper-sts-" + secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._sts_tokens[_digest(token)] = StsToken(
                client_id, user_id, dict(grant_ids), self._clock() + self.sts_ttl
            )
        return token

    def agent_token(self, token: str) -> AgentToken | None:
        with self._lock:
            found = self._agent_tokens.get(_digest(token))
        return found if found and found.expires_at > self._clock() else None

    def sts_token(self, token: str) -> StsToken | None:
        with self._lock:
            found = self._sts_tokens.get(_digest(token))
        return found if found and found.expires_at > self._clock() else None

    def revoke_all(self) -> None:
        """Invalidate every issued token (as a backend restart or key rotation would)."""
        with self._lock:
            self._agent_tokens.clear()
            self._sts_tokens.clear()

    def _prune(self) -> None:
        now = self._clock()
        for table in (self._agent_tokens, self._sts_tokens):
            for key in [key for key, value in table.items() if value.expires_at <= now]:
                del table[key]
