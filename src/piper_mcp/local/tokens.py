"""Tokens the local backend issues: random, expiring, bound to what they allow.

An agent token is bound to the agent's registration (a removed and re-added
agent does not inherit it); an STS token to the grants it was minted under (a
revoked grant's tokens stay dead, even when the variable is granted again).

Only a SHA-256 digest of each token is kept, so a memory dump or a stored
copy does not hand out working tokens. Token life is measured on a monotonic
clock: stepping the machine's clock neither kills tokens early nor lets them
live longer. At most `max_tokens` of each kind are kept, the oldest dropped
first, so memory stays bounded whatever the rate of requests: a dropped token
simply stops working, and its holder asks for a new one, as after expiry.
Revocation never depends on what is kept (grants are checked on every use),
so dropping a token can only refuse it sooner.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

AGENT_TOKEN_TTL_SECONDS = 3600
STS_TOKEN_TTL_SECONDS = 3600
# Of each kind. A record takes about 0.3 KiB, so this bounds each table to a few MiB.
MAX_TOKENS = 10_000

STS_PREFIX = "piper-sts-"
AGENT_PREFIX = "piper-agent-"
_STS_SHAPE = re.compile(re.escape(STS_PREFIX) + r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class AgentToken:
    client_id: str
    user_id: str
    audience: str  # the path of the one function it may call
    agent_registered_at: float
    expires_at: float  # on the issuer's monotonic clock


@dataclass(frozen=True, slots=True)
class StsToken:
    client_id: str
    user_id: str
    grants: tuple[tuple[str, str], ...]  # (credential id, id of the grant that allowed it)
    expires_at: float  # on the issuer's monotonic clock

    def minted_under(self, credential_id: str) -> str | None:
        """The id of the grant under which this token reads `credential_id`, if it does."""
        return next((grant for cid, grant in self.grants if cid == credential_id), None)


class _Expiring(Protocol):
    @property
    def expires_at(self) -> float: ...


Record = TypeVar("Record", bound=_Expiring)


class _Kept(Generic[Record]):
    """Records of one kind of token by digest, oldest first (which is also expiry order).

    An expired record is kept for one more `ttl`, so its holder can be told
    that it expired rather than that it is unknown, unless room is needed first.
    """

    def __init__(self, ttl: int, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._records: OrderedDict[bytes, Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, digest: bytes, record: Record, now: float) -> None:
        while self._records:
            oldest = next(iter(self._records.values()))
            if len(self._records) < self.capacity and oldest.expires_at + self.ttl > now:
                break
            self._records.popitem(last=False)
        self._records[digest] = record

    def get(self, digest: bytes) -> Record | None:
        return self._records.get(digest)

    def clear(self) -> None:
        self._records.clear()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenIssuer:
    """Issues and checks agent and STS tokens; `clock` is monotonic (seconds)."""

    def __init__(
        self,
        *,
        agent_ttl: int = AGENT_TOKEN_TTL_SECONDS,
        sts_ttl: int = STS_TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self.agent_ttl = agent_ttl
        self.sts_ttl = sts_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._agent_tokens: _Kept[AgentToken] = _Kept(agent_ttl, max_tokens)
        self._sts_tokens: _Kept[StsToken] = _Kept(sts_ttl, max_tokens)

    @property
    def agent_tokens_kept(self) -> int:
        return len(self._agent_tokens)

    @property
    def sts_tokens_kept(self) -> int:
        return len(self._sts_tokens)

    def issue_agent_token(
        self, client_id: str, user_id: str, audience: str, *, agent_registered_at: float
    ) -> str:
        token = AGENT_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            # Interned: thousands of records then share one copy of each name.
            record = AgentToken(
                sys.intern(client_id),
                sys.intern(user_id),
                sys.intern(audience),
                agent_registered_at,
                now + self.agent_ttl,
            )
            self._agent_tokens.add(_digest(token), record, now)
        return token

    def issue_sts_token(self, client_id: str, user_id: str, grant_ids: dict[str, str]) -> str:
        """A token that reads each credential in `grant_ids` while that very grant lasts."""
        token = STS_PREFIX + secrets.token_urlsafe(32)
        grants = tuple((sys.intern(cid), sys.intern(gid)) for cid, gid in grant_ids.items())
        with self._lock:
            now = self._clock()
            record = StsToken(
                sys.intern(client_id), sys.intern(user_id), grants, now + self.sts_ttl
            )
            self._sts_tokens.add(_digest(token), record, now)
        return token

    def agent_token(self, token: str) -> AgentToken | None:
        with self._lock:
            found = self._agent_tokens.get(_digest(token))
        return found if found and found.expires_at > self._clock() else None

    def sts_token(self, token: str) -> StsToken | None:
        with self._lock:
            found = self._sts_tokens.get(_digest(token))
        return found if found and found.expires_at > self._clock() else None

    def sts_token_expired(self, token: str) -> bool:
        """Whether `token` is an STS token of this issuer's that has expired (lately)."""
        with self._lock:
            found = self._sts_tokens.get(_digest(token))
        return found is not None and found.expires_at <= self._clock()

    @staticmethod
    def has_sts_shape(token: str) -> bool:
        """Whether `token` looks like an STS token this issuer mints (valid or not)."""
        return _STS_SHAPE.fullmatch(token) is not None

    def revoke_all(self) -> None:
        """Invalidate every issued token (as a backend restart or key rotation would)."""
        with self._lock:
            self._agent_tokens.clear()
            self._sts_tokens.clear()
