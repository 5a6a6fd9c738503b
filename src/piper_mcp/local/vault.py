"""What the local backend knows: users and their Link instances, agents, secrets, grants.

`MemoryVault` keeps it in memory (tests, the demo). Agent client secrets are
kept only as salted scrypt hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field

from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.piper.protocol import AGENT_SECRET_PREFIX

ACTIVE = "ACTIVE"


@dataclass(frozen=True)
class Agent:
    client_id: str
    owner_user_id: str
    variables: tuple[str, ...]
    secret_salt: bytes = field(repr=False)
    secret_hash: bytes = field(repr=False)


@dataclass(frozen=True)
class Grant:
    user_id: str
    client_id: str
    variable: str  # normalized
    credential_id: str
    status: str = ACTIVE

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class GoogleIdentity:
    """A Google service account whose self-signed JWTs the Secret Manager subset accepts."""

    email: str
    public_key_pem: str = field(repr=False)
    readable_secrets: frozenset[str]


def hash_client_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)


class MemoryVault:
    """An in-memory vault; thread-safe, since the HTTP server and its seeders share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, str] = {}
        self._agents: dict[str, Agent] = {}
        self._secrets: dict[str, tuple[str, str]] = {}  # id → (owner, value)
        self._grants: dict[tuple[str, str, str], Grant] = {}
        self._identities: dict[str, GoogleIdentity] = {}

    # --- seeding ---

    def add_instance(self, instance_id: str, user_id: str) -> None:
        with self._lock:
            self._instances[instance_id] = user_id

    def add_agent(
        self, client_id: str, client_secret: str, *, owner_user_id: str, variables: list[str]
    ) -> None:
        """Register an agent; its secret is also readable as `agent-secret-<id>`."""
        salt = secrets.token_bytes(16)
        agent = Agent(
            client_id,
            owner_user_id,
            tuple(variables),
            salt,
            hash_client_secret(client_secret, salt),
        )
        with self._lock:
            self._agents[client_id] = agent
            self._secrets[AGENT_SECRET_PREFIX + client_id] = (owner_user_id, client_secret)

    def put_secret(self, secret_id: str, value: str, *, owner_user_id: str) -> None:
        with self._lock:
            self._secrets[secret_id] = (owner_user_id, value)

    def remove_secret(self, secret_id: str) -> None:
        with self._lock:
            self._secrets.pop(secret_id, None)

    def grant(
        self, user_id: str, client_id: str, variable: str, credential_id: str, status: str = ACTIVE
    ) -> None:
        name = normalize_variable_name(variable)
        with self._lock:
            self._grants[(user_id, client_id, name)] = Grant(
                user_id, client_id, name, credential_id, status
            )

    def revoke(self, user_id: str, client_id: str, variable: str) -> None:
        with self._lock:
            self._grants.pop((user_id, client_id, normalize_variable_name(variable)), None)

    def add_google_identity(
        self, email: str, public_key_pem: str, *, readable_secrets: list[str]
    ) -> None:
        with self._lock:
            self._identities[email] = GoogleIdentity(
                email, public_key_pem, frozenset(readable_secrets)
            )

    # --- lookups ---

    def user_for_instance(self, instance_id: str) -> str | None:
        with self._lock:
            return self._instances.get(instance_id)

    def agent(self, client_id: str) -> Agent | None:
        with self._lock:
            return self._agents.get(client_id)

    def verify_client_secret(self, client_id: str, client_secret: str) -> Agent | None:
        agent = self.agent(client_id)
        if agent is None:
            # Spend the same time as a real check, so timing tells nothing about ids.
            hash_client_secret(client_secret, b"\0" * 16)
            return None
        if hmac.compare_digest(
            agent.secret_hash, hash_client_secret(client_secret, agent.secret_salt)
        ):
            return agent
        return None

    def grant_for(self, user_id: str, client_id: str, variable: str) -> Grant | None:
        with self._lock:
            return self._grants.get((user_id, client_id, variable))

    def grants_of(self, user_id: str, client_id: str) -> list[Grant]:
        with self._lock:
            return [
                grant
                for (user, agent, _), grant in self._grants.items()
                if user == user_id and agent == client_id
            ]

    def secret_value(self, secret_id: str) -> str | None:
        with self._lock:
            entry = self._secrets.get(secret_id)
        return entry[1] if entry else None

    def google_identity(self, email: str) -> GoogleIdentity | None:
        with self._lock:
            return self._identities.get(email)
