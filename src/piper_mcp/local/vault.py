"""The local vault: users and their Link instances, agents, encrypted secrets, grants, audit.

SQLite in WAL mode, every change in one transaction, so several `serve`
processes and CLI calls can share a vault, and a process killed mid-write
leaves every committed change intact. Readers never wait for a writer; a
writer waits for another process's write lock `BUSY_TIMEOUT_SECONDS` at most.
Secret values are sealed with the vault key (`encryption.py`); agent client
secrets are kept only as salted scrypt hashes. Each thread gets its own
connection. A vault is created whole or not at all: built under temporary
names, then linked into place.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.invocation import command
from piper_mcp.local.encryption import VaultKey, VaultKeyError
from piper_mcp.local.errors import VaultError, did_you_mean
from piper_mcp.local.files import (
    DATABASE_FILE,
    KEY_FILE,
    check_home,
    make_private_dir,
    write_private_file,
)
from piper_mcp.local.storage import (
    BUSY_TIMEOUT_SECONDS,
    DamagedSecretError,
    StorageError,
    damaged,
    storage_error,
)
from piper_mcp.piper.errors import PiperVariableNameError
from piper_mcp.piper.names import checked_variable_name, normalize_variable_name
from piper_mcp.printable import has_control_characters, quoted
from piper_mcp.secret_strength import WeakSecretError, checked_secret

if TYPE_CHECKING:
    from piper_mcp.local.settings import AuditRetention

__all__ = ["StorageError", "Vault", "VaultError"]

ACTIVE = "ACTIVE"
SCHEMA_VERSION = "5"
MAX_SECRET_NAME_LENGTH = 200
# Suffix of the files `init` builds before linking them into place.
PARTIAL = ".partial-"
# A partial file this old is a killed `init`'s leftover, not one still being built.
STALE_PARTIAL_SECONDS = 300
_CONNECTION_SERIALS = itertools.count()
# Decided and expired grant requests are kept this long after they expire, then forgotten.
REQUESTS_KEPT_SECONDS = 86_400.0
# Grant requests waiting per agent, at most, and per server (`grant_requests`): a model
# calling again and again opens one each time; past this many, no more are opened (the
# call says why) until the user decides or they expire.
MAX_WAITING_REQUESTS = 64
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

GRANT_REQUESTS_TABLE = """
CREATE TABLE grant_requests (
    request_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    variable TEXT NOT NULL,
    client TEXT NOT NULL,
    opened_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    outcome TEXT,
    decided_at REAL
);
"""

# The server process whose call waits for each request (`running.identity`): a table of its
# own, so that a server of schema 4 still running writes its requests as before.
GRANT_REQUEST_RAISERS_TABLE = """
CREATE TABLE grant_request_raisers (request_id TEXT PRIMARY KEY, raised_by TEXT NOT NULL);
"""

SCHEMA = (
    GRANT_REQUESTS_TABLE
    + GRANT_REQUEST_RAISERS_TABLE
    + """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE instances (instance_id TEXT PRIMARY KEY, user_id TEXT NOT NULL);
CREATE TABLE agents (
    client_id TEXT PRIMARY KEY,
    owner_user_id TEXT NOT NULL,
    secret_salt BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at REAL NOT NULL,
    secretless INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE agent_variables (
    client_id TEXT NOT NULL REFERENCES agents ON DELETE CASCADE,
    variable TEXT NOT NULL,
    PRIMARY KEY (client_id, variable)
);
CREATE TABLE secrets (
    secret_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner_user_id TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE grants (
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL REFERENCES agents ON DELETE CASCADE,
    variable TEXT NOT NULL,
    secret_id TEXT NOT NULL REFERENCES secrets ON DELETE CASCADE,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    grant_id TEXT NOT NULL DEFAULT '',
    api_rule TEXT,
    PRIMARY KEY (user_id, client_id, variable)
);
CREATE TABLE google_identities (
    email TEXT PRIMARY KEY,
    public_key_pem TEXT NOT NULL,
    readable_secrets TEXT NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    client_id TEXT,
    user_id TEXT,
    action TEXT NOT NULL,
    subject TEXT,
    outcome TEXT NOT NULL,
    reason TEXT
);
"""
)

_SELECT_AGENTS = (
    "SELECT client_id, owner_user_id, created_at, secret_salt, secret_hash, secretless FROM agents"
)

# Schema 1 → 2: agents may be secretless (protocol v2, opted in by the operator); each grant
# has its own id, so tokens minted under a revoked grant stay dead when it is granted again.
MIGRATE_1_TO_2 = """
ALTER TABLE agents ADD COLUMN secretless INTEGER NOT NULL DEFAULT 0;
ALTER TABLE grants ADD COLUMN grant_id TEXT NOT NULL DEFAULT '';
UPDATE grants SET grant_id = 'grant-' || lower(hex(randomblob(10)));
"""

# Schema 2 → 3: a grant may carry the rule for brokered calls with it (`call_api`): which
# hosts, and where the credential goes (JSON, read by `piper_mcp.broker.rules`).
MIGRATE_2_TO_3 = """
ALTER TABLE grants ADD COLUMN api_rule TEXT;
"""

# Schema 3 → 4: the grant requests a `serve --local` raised are kept in the vault, so the
# dashboard and `piper-mcp local requests` (other processes) can see and decide them.
MIGRATE_3_TO_4 = GRANT_REQUESTS_TABLE
# Schema 4 → 5: each request names the server whose call waits for it, so one whose server
# was killed stops waiting at once, not when it expires.
MIGRATE_4_TO_5 = GRANT_REQUEST_RAISERS_TABLE
# A request as the vault keeps it: its row, and its server where one is named.
_SELECT_REQUESTS = (
    "SELECT grant_requests.*, raised_by FROM grant_requests"
    " LEFT JOIN grant_request_raisers USING (request_id)"
)


# The vault's records are NamedTuples, not dataclasses: `exec --local` reads the vault,
# and importing `dataclasses` (it imports `inspect`) would add a tenth to its start-up.


class Agent(NamedTuple):
    client_id: str
    owner_user_id: str
    variables: tuple[str, ...]
    created_at: float
    secret_salt: bytes
    secret_hash: bytes
    # Served over protocol v2, which proves nothing: anyone who can reach the ports as
    # this user can act as the agent. Only the operator turns it on.
    secretless: bool = False

    @property
    def has_client_secret(self) -> bool:
        return bool(self.secret_hash)

    @property
    def serves_v2(self) -> bool:
        """Served over protocol v2: made secretless, and without a client secret (one that
        has a secret proves itself over v1 only, whatever an older vault says)."""
        return self.secretless and not self.has_client_secret

    def __repr__(self) -> str:  # never the client secret's salt and hash
        return (
            f"Agent(client_id={self.client_id!r}, owner_user_id={self.owner_user_id!r}, "
            f"variables={self.variables!r}, secretless={self.secretless!r})"
        )


class SecretInfo(NamedTuple):
    secret_id: str
    name: str
    owner_user_id: str
    created_at: float
    updated_at: float


class Grant(NamedTuple):
    user_id: str
    client_id: str
    variable: str  # normalized
    credential_id: str
    secret_name: str
    status: str
    created_at: float
    grant_id: str
    api_rule: str | None = None  # JSON, for brokered calls; None: none stored

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


class StoredGrantRequest(NamedTuple):
    """A grant request as the vault keeps it: what was asked, and what the user decided."""

    request_id: str
    client_id: str  # the agent
    variable: str
    client: str  # the MCP client whose call raised it
    opened_at: float
    expires_at: float
    outcome: str | None  # "granted", "denied", "expired" (its call ended); None: waiting
    decided_at: float | None
    raised_by: str | None = None  # the server whose call waits (`running.identity`)

    def waiting(self, now: float) -> bool:
        return self.outcome is None and now < self.expires_at and self.waited_for

    @property
    def waited_for(self) -> bool:
        """False once the server that raised it is gone (killed before it could withdraw it)."""
        from piper_mcp.local.running import still_running  # only for requests

        return self.raised_by is None or still_running(self.raised_by)


class GoogleIdentity(NamedTuple):
    """A Google service account whose self-signed JWTs the Secret Manager subset accepts."""

    email: str
    public_key_pem: str
    readable_secrets: frozenset[str]


class AuditEntry(NamedTuple):
    at: float
    client_id: str | None
    user_id: str | None
    action: str
    subject: str | None
    outcome: str
    reason: str | None


def hash_client_secret(secret: str, salt: bytes) -> bytes:
    import hashlib  # only here: `exec --local` never hashes

    return hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)


def checked_agent_id(client_id: str) -> str:
    if not _AGENT_ID.fullmatch(client_id):
        raise VaultError(
            f"agent id {quoted(client_id)} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return client_id


def checked_secret_name(name: str) -> str:
    if not name or name != name.strip():
        raise VaultError("a secret name must be non-empty, without leading or trailing spaces")
    if len(name) > MAX_SECRET_NAME_LENGTH:
        raise VaultError(
            f"secret name is {len(name)} characters long; the limit is {MAX_SECRET_NAME_LENGTH}"
        )
    if has_control_characters(name):
        raise VaultError(f"secret name {quoted(name)} contains control characters")
    return name


def checked_declared_variable(variable: str) -> str:
    if has_control_characters(variable):
        raise VaultError(f"variable name {quoted(variable)} contains control characters")
    try:
        return checked_variable_name(variable)
    except PiperVariableNameError as error:
        raise VaultError(
            error.message.rstrip(".").replace("variable_name", "variable name")
        ) from None


# --- creating a vault whole ---


def _build(home: Path) -> None:
    """Write the key and a complete database under temporary names, then link both into place.

    A link never replaces an existing file, so a concurrent `init` is never
    overwritten; the database goes last, because its presence makes a vault.
    Whatever fails, the temporary files are removed.
    """
    _remove_stale_partials(home)
    suffix = PARTIAL + os.urandom(4).hex()
    key_file, database = home / (KEY_FILE + suffix), home / (DATABASE_FILE + suffix)
    try:
        key = VaultKey.create(key_file)
        write_private_file(database, b"")  # 0600 from the start; SQLite's journals copy it
        _fill(database, key)
        os.link(key_file, home / KEY_FILE)
        try:
            os.link(database, home / DATABASE_FILE)
        except BaseException:
            (home / KEY_FILE).unlink()
            raise
    finally:
        for leftover in (key_file, database, *_journals(database)):
            leftover.unlink(missing_ok=True)


def _fill(database: Path, key: VaultKey) -> None:
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        user_id = "user-" + os.urandom(6).hex()
        instance_id = "instance-" + os.urandom(12).hex()
        for name, value in (
            ("schema_version", SCHEMA_VERSION),
            ("local_user_id", user_id),
            ("local_instance_id", instance_id),
        ):
            db.execute("INSERT INTO meta VALUES (?, ?)", (name, value))
        db.execute("INSERT INTO meta VALUES ('key_check', ?)", (key.key_check(),))
        db.execute("INSERT INTO instances VALUES (?, ?)", (instance_id, user_id))
        # No client secret and no v2: only `serve --local` (in-process) can act as it.
        db.execute(
            "INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?)",
            (DEFAULT_AGENT, user_id, b"", b"", time.time(), 0),
        )
        db.execute("COMMIT")
        # Persistent: set once, here, over a file that already holds everything (the
        # write-ahead log it starts is empty, and removed when the connection closes).
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()


def _journals(database: Path) -> list[Path]:
    return [database.with_name(database.name + end) for end in ("-journal", "-wal", "-shm")]


def _remove_stale_partials(home: Path) -> None:
    """Files an `init` killed mid-way left; a running one's are younger and stay."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for name in (KEY_FILE, DATABASE_FILE):
        for stale in home.glob(f"{name}{PARTIAL}*"):
            with suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()


def _appears(path: Path, within: float = 2.0) -> bool:
    ends = time.monotonic() + within
    while not path.exists():
        if time.monotonic() > ends:
            return False
        time.sleep(0.05)
    return True


def _remove_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()


def _read_audit_retention() -> AuditRetention:
    from piper_mcp.local.settings import audit_retention  # pydantic-settings: only when needed

    return audit_retention()


def _stray_key(home: Path) -> VaultError:
    return VaultError(
        f"{home / KEY_FILE} exists without a vault database; move it away or set PIPER_HOME"
    )


class Vault:
    """A vault on disk: `Vault.init(home)` once, then `Vault.open(home)`."""

    def __init__(self, home: Path, key: VaultKey) -> None:
        self.home = home
        self.database = home / DATABASE_FILE
        self._key = key
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._commits = 0  # this vault's own commits, which `PRAGMA data_version` ignores
        self._retention: AuditRetention | None = None  # see `audit_retention`

    # --- creating and opening ---

    @classmethod
    def init(cls, home: Path) -> tuple[Vault, bool]:
        """Create a vault in `home`, or open the one there; (vault, created).

        On failure (a full disk, say) nothing is left behind, so `init` can
        simply be run again.
        """
        check_home(home)
        database = home / DATABASE_FILE
        if database.exists():
            return cls.open(home), False
        if (home / KEY_FILE).exists():
            raise _stray_key(home)
        made_home = not home.exists()
        _read_audit_retention()  # a wrong setting is said before anything is written
        try:
            make_private_dir(home)
        except OSError as error:
            if made_home:  # /proc, a read-only disk: what check_home cannot foresee
                raise VaultError(
                    f"cannot create PIPER_HOME {home} ({error.strerror or error}); set "
                    "PIPER_HOME to a folder you can create"
                ) from None
            raise storage_error(error, database) from None
        try:
            _build(home)
        except FileExistsError:
            # Another process linked its vault into place first: use that one.
            if not _appears(database):
                raise _stray_key(home) from None
            return cls.open(home), False
        except (sqlite3.Error, OSError) as error:
            if made_home:
                _remove_if_empty(home)
            raise storage_error(error, database) from None
        return cls.open(home), True

    @classmethod
    def open(cls, home: Path, *, only_to_read: bool = False) -> Vault:
        """The vault in `home`; its audit settings (PIPER_LOCAL_AUDIT_*) read at once, so a
        wrong one is said before anything is served.

        `only_to_read`: for a caller that does not write the audit table (`exec`), which
        then reads them only if it writes after all, and needs no pydantic-settings.
        """
        check_home(home)
        database = home / DATABASE_FILE
        if not database.exists():
            raise VaultError(f"no vault in {home}; create one with `{command('local', 'init')}`")
        try:
            key = VaultKey.load(home / KEY_FILE)
            vault = cls(home, key)
            if not only_to_read:
                vault.audit_retention()
            key.verify(vault._meta("key_check"))
            vault._migrate()
        except VaultKeyError as error:
            raise VaultError(f"cannot open the vault in {home}: {error}") from None
        except (sqlite3.Error, OSError) as error:
            raise storage_error(error, database) from None
        return vault

    def check(self) -> None:
        """Raise a `StorageError` saying what to do if the database is damaged.

        `PRAGMA quick_check` reads every page once (no index cross-checks):
        milliseconds for a vault of a thousand secrets, and a server that
        starts on a damaged vault would only fail later, call by call.
        """
        try:
            found = self._db().execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.Error as error:
            raise storage_error(error, self.database) from None
        if found != [("ok",)]:
            # "*** in database main ***\nPage 10: btreeInitPage() returns error code 11"
            said = str(found[0][0]) if found else "no answer"
            raise damaged(
                self.database, " ".join(said.replace("*** in database main ***", "").split())
            )

    def _migrate(self) -> None:
        steps: dict[str, list[str]] = {
            "1": [MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4, MIGRATE_4_TO_5],
            "2": [MIGRATE_2_TO_3, MIGRATE_3_TO_4, MIGRATE_4_TO_5],
            "3": [MIGRATE_3_TO_4, MIGRATE_4_TO_5],
            "4": [MIGRATE_4_TO_5],
        }
        if self._understood(str(self._meta("schema_version")), steps):
            return
        with self._write() as db:
            # Re-read under the write lock: another process may have migrated meanwhile,
            # maybe a newer piper-mcp, further than this one knows.
            (current,) = db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if self._understood(str(current), steps):
                return
            for migration in steps[str(current)]:
                for statement in migration.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))

    def _understood(self, version: str, steps: dict[str, list[str]]) -> bool:
        """True: `version` is this piper-mcp's; False: an older one it migrates from."""
        if version == SCHEMA_VERSION:
            return True
        if version not in steps:
            raise VaultError(
                f"the vault in {self.home} has schema {version}, newer than this piper-mcp "
                "understands; upgrade piper-mcp"
            )
        return False

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    # --- connections and transactions ---

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # The timeout bounds how long a write waits for another process's write lock;
            # in WAL mode reads never wait for one.
            connection = sqlite3.connect(
                self.database,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute("PRAGMA foreign_keys = ON")
            # NORMAL in WAL mode survives any process crash; only power loss can drop the
            # last commits. Secrets are written rarely, the audit trail on every call.
            connection.execute("PRAGMA synchronous = NORMAL")
            self._local.connection = connection
            self._local.serial = next(_CONNECTION_SERIALS)
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
            self._commits += 1
        except BaseException:
            # A failed COMMIT (a full disk) can leave the transaction open; SQLite may
            # also have rolled it back already.
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    self._discard(db)  # closing rolls back; the next write gets a new one
            raise

    def version(self) -> tuple[int, int, int]:
        """A value that changes whenever the database may have changed, from any process.

        One `PRAGMA data_version`, no table read. That number is per connection and
        ignores the connection's own commits, so the connection and this vault's own
        commit count are part of the value.
        """
        (data_version,) = self._db().execute("PRAGMA data_version").fetchone()
        return self._local.serial, int(data_version), self._commits

    def fingerprint(self) -> str:
        """A value that changes whenever what the vault holds may look different: agents,
        secrets (names and dates), grants, waiting requests, also when their server is gone
        (not the audit table: see `audit_mark`). One read of each table's indexes, and of
        the waiting requests, from any thread; for a page that updates itself."""
        row = (
            self._db()
            .execute(
                "SELECT (SELECT count(*) || '/' || coalesce(max(created_at), 0) FROM agents),"
                " (SELECT count(*) FROM agent_variables),"
                " (SELECT count(*) || '/' || coalesce(max(updated_at), 0) FROM secrets),"
                " (SELECT count(*) || '/' || coalesce(max(created_at), 0) FROM grants),"
                " (SELECT count(*) || '/' || coalesce(max(decided_at), 0) FROM grant_requests"
                "   WHERE outcome IS NOT NULL OR expires_at > ?)",
                (time.time(),),
            )
            .fetchone()
        )
        return "|".join(str(part) for part in (*row, len(self.grant_requests())))

    def audit_mark(self) -> int:
        """The last audit row's id: changes whenever a row is added."""
        return int(self._db().execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])

    def _discard(self, connection: sqlite3.Connection) -> None:
        with self._connections_lock:
            self._connections.remove(connection)
        self._local.connection = None
        connection.close()

    def _meta(self, name: str) -> Any:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        if row is None:
            raise VaultError(f"the vault in {self.home} is damaged (no {name})")
        return row[0]

    @property
    def local_user_id(self) -> str:
        return str(self._meta("local_user_id"))

    @property
    def local_instance_id(self) -> str:
        return str(self._meta("local_instance_id"))

    # --- users and instances ---

    def add_instance(self, instance_id: str, user_id: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO instances VALUES (?, ?)", (instance_id, user_id))

    def user_for_instance(self, instance_id: str) -> str | None:
        row = (
            self._db()
            .execute("SELECT user_id FROM instances WHERE instance_id = ?", (instance_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    # --- agents ---

    def add_agent(
        self,
        client_id: str,
        client_secret: str | None,
        *,
        owner_user_id: str,
        variables: list[str],
        secretless: bool = False,
    ) -> Agent:
        """Register an agent that proves itself with `client_secret` (protocol v1).

        Without a client secret, only a secretless agent (protocol v2) or the
        in-process `serve --local` can act as it. An agent with a client secret is
        never secretless: v2 would let anyone skip the proof the secret is for.
        """
        checked_agent_id(client_id)
        if client_secret is not None and secretless:
            raise VaultError(
                f"agent {quoted(client_id)} cannot have a client secret and be secretless: "
                "leave out --secretless (protocol v1, proven by the secret) or the secret "
                "(protocol v2, trusting every local process)"
            )
        declared = [checked_declared_variable(variable) for variable in variables]
        salt, hashed = b"", b""
        if client_secret is not None:
            try:
                checked_secret(client_secret, "the client secret")
            except WeakSecretError as error:
                raise VaultError(str(error)) from None
            salt = os.urandom(16)
            hashed = hash_client_secret(client_secret, salt)
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT 1 FROM agents WHERE client_id = ?", (client_id,)).fetchone():
                raise VaultError(f"agent {client_id!r} already exists; remove it first")
            db.execute(
                "INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?)",
                (client_id, owner_user_id, salt, hashed, now, int(secretless)),
            )
            db.executemany(
                "INSERT OR IGNORE INTO agent_variables VALUES (?, ?)",
                [(client_id, variable) for variable in declared],
            )
        variables_ = tuple(dict.fromkeys(declared))
        return Agent(client_id, owner_user_id, variables_, now, salt, hashed, secretless)

    def set_secretless(self, client_id: str, secretless: bool) -> None:
        """Let anyone who can reach the ports act as `client_id` over protocol v2, or stop it.

        Never for an agent with a client secret: it is served over v1 only.
        """
        agent = self.agent(client_id)
        if secretless and agent is not None and agent.has_client_secret:
            raise VaultError(
                f"agent {quoted(client_id)} has a client secret, so it proves itself over "
                "protocol v1 only. For protocol v2, register a separate secretless agent: "
                f"`{command('local', 'agent', 'add', 'ID', '--secretless', '--variable', 'NAME')}`"
            )
        with self._write() as db:
            changed = db.execute(
                "UPDATE agents SET secretless = ? WHERE client_id = ?",
                (int(secretless), client_id),
            ).rowcount
        if not changed:
            raise self._no_agent(client_id)

    def _no_agent(self, client_id: str) -> VaultError:
        """The agents there are, and the one likely meant; adding is for a new name only."""
        known = [agent.client_id for agent in self.agents()]
        return VaultError(
            f"there is no agent {quoted(client_id)} in {self.home}; agents: "
            f"{', '.join(known) or 'none'}.{did_you_mean(client_id, known)}"
        )

    def _no_secret(self, name: str, *, to_grant: bool = False) -> VaultError:
        known = [secret.name for secret in self.secrets()]
        meant = did_you_mean(name, known)
        if not meant and to_grant:
            meant = f" Store it first: `{command('local', 'secret', 'set', name)}`"
        shown = ", ".join(quoted(n) for n in known) or "none"
        return VaultError(
            f"there is no secret {quoted(name)} in {self.home}; secrets: {shown}.{meant}"
        )

    def agents(self) -> list[Agent]:
        rows = self._db().execute(f"{_SELECT_AGENTS} ORDER BY client_id")
        return [self._agent_from(row) for row in rows.fetchall()]

    def agent(self, client_id: str) -> Agent | None:
        row = self._db().execute(f"{_SELECT_AGENTS} WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else self._agent_from(row)

    def _agent_from(self, row: tuple[str, str, float, bytes, bytes, int]) -> Agent:
        client_id, owner, created, salt, hashed, secretless = row
        variables = self._db().execute(
            "SELECT variable FROM agent_variables WHERE client_id = ? ORDER BY rowid", (client_id,)
        )
        names = tuple(v for (v,) in variables.fetchall())
        return Agent(client_id, owner, names, created, salt, hashed, bool(secretless))

    def remove_agent(self, client_id: str) -> None:
        """Remove the agent, its grants, and its waiting requests (an agent registered again
        under the same id must not inherit them)."""
        with self._write() as db:
            if not db.execute("DELETE FROM agents WHERE client_id = ?", (client_id,)).rowcount:
                raise self._no_agent(client_id)
            db.execute(
                "UPDATE grant_requests SET outcome = 'expired', decided_at = ?"
                " WHERE client_id = ? AND outcome IS NULL",
                (time.time(), client_id),
            )

    def verify_client_secret(self, client_id: str, client_secret: str) -> Agent | None:
        agent = self.agent(client_id)
        if agent is None or not agent.has_client_secret:
            # Spend the time a real check takes, so timing does not tell which ids exist.
            hash_client_secret(client_secret, b"\0" * 16)
            return None
        candidate = hash_client_secret(client_secret, agent.secret_salt)
        from hmac import compare_digest  # only here, as hashlib above

        return agent if compare_digest(agent.secret_hash, candidate) else None

    # --- secrets ---

    def put_secret(self, name: str, value: str, *, owner_user_id: str) -> str:
        """Store (or replace) the value of secret `name`; its id, stable across updates."""
        checked_secret_name(name)
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT secret_id FROM secrets WHERE name = ?", (name,)).fetchone()
            secret_id = row[0] if row else "cred-" + os.urandom(10).hex()
            sealed = self._key.seal(value.encode("utf-8"), secret_id.encode())
            if row:
                db.execute(
                    "UPDATE secrets SET sealed = ?, updated_at = ? WHERE secret_id = ?",
                    (sealed, now, secret_id),
                )
            else:
                db.execute(
                    "INSERT INTO secrets VALUES (?, ?, ?, ?, ?, ?)",
                    (secret_id, name, owner_user_id, sealed, now, now),
                )
        return str(secret_id)

    def secrets(self) -> list[SecretInfo]:
        rows = self._db().execute(
            "SELECT secret_id, name, owner_user_id, created_at, updated_at FROM secrets"
            " ORDER BY name"
        )
        return [SecretInfo(*row) for row in rows.fetchall()]

    def remove_secret(self, name: str) -> None:
        """Delete a secret and every grant of it."""
        with self._write() as db:
            if not db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount:
                raise self._no_secret(name)

    def find_secret(self, id_or_name: str) -> SecretInfo | None:
        row = (
            self._db()
            .execute(
                "SELECT secret_id, name, owner_user_id, created_at, updated_at FROM secrets"
                " WHERE secret_id = ? OR name = ? ORDER BY secret_id = ? DESC LIMIT 1",
                (id_or_name, id_or_name, id_or_name),
            )
            .fetchone()
        )
        return None if row is None else SecretInfo(*row)

    def secret_value(self, secret_id: str) -> str | None:
        """The value of a secret, None if there is none; `DamagedSecretError` if it is damaged."""
        row = (
            self._db()
            .execute("SELECT name, sealed FROM secrets WHERE secret_id = ?", (secret_id,))
            .fetchone()
        )
        if row is None:
            return None
        name, sealed = row
        try:
            # The key was verified when the vault was opened: a ciphertext that fails
            # authentication was changed on disk (or moved from another row).
            plaintext = self._key.open(sealed, secret_id.encode())
        except VaultKeyError:
            raise DamagedSecretError(str(name), secret_id) from None
        return plaintext.decode("utf-8")

    def check_secret(self, secret_id: str) -> None:
        """Raise `DamagedSecretError` unless the secret, if it exists, can be read.

        AES-GCM authenticates as it decrypts, so this is a decryption: microseconds.
        """
        self.secret_value(secret_id)

    # --- grants ---

    def grant(
        self,
        user_id: str,
        client_id: str,
        variable: str,
        secret_name: str,
        status: str = ACTIVE,
        api_rule: str | None = None,
        deciding: str | None = None,
    ) -> tuple[Grant, bool]:
        """Let `client_id` have `secret_name` when it asks for `variable` on behalf of `user_id`.

        On a local vault the user is also the agent's developer: a variable the
        agent has not declared yet is declared by granting it. Returns the grant
        and whether the variable was newly declared. `deciding`: the waiting grant
        request this grant approves, marked granted in the same transaction; if it
        is no longer waiting (denied elsewhere meanwhile), nothing is granted.
        """
        agent = self.agent(client_id)
        if agent is None:
            raise self._no_agent(client_id)
        declared = checked_declared_variable(variable)
        wanted = normalize_variable_name(declared)
        newly_declared = wanted not in {normalize_variable_name(v) for v in agent.variables}
        secret = self.find_secret(secret_name)
        if secret is None:
            raise self._no_secret(secret_name, to_grant=True)
        now = time.time()
        # A fresh id on every grant: tokens minted under an earlier one never come back.
        grant_id = "grant-" + os.urandom(10).hex()
        with self._write() as db:
            if deciding is not None and not self._decide(db, deciding, "granted"):
                raise VaultError(f"the grant request {quoted(deciding)} is no longer waiting")
            if newly_declared:
                db.execute("INSERT INTO agent_variables VALUES (?, ?)", (client_id, declared))
            db.execute(
                "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, client_id, wanted, secret.secret_id, status, now, grant_id, api_rule),
            )
        grant = Grant(
            user_id,
            client_id,
            wanted,
            secret.secret_id,
            secret.name,
            status,
            now,
            grant_id,
            api_rule,
        )
        return grant, newly_declared

    def revoke(self, user_id: str, client_id: str, variable: str) -> None:
        with self._write() as db:
            removed = db.execute(
                "DELETE FROM grants WHERE user_id = ? AND client_id = ? AND variable = ?",
                (user_id, client_id, normalize_variable_name(variable)),
            ).rowcount
        if not removed:
            raise VaultError(f"agent {client_id!r} has no grant of {quoted(variable)}")

    def grants(self, user_id: str | None = None, client_id: str | None = None) -> list[Grant]:
        rows = self._db().execute(
            "SELECT g.user_id, g.client_id, g.variable, g.secret_id, s.name, g.status,"
            " g.created_at, g.grant_id, g.api_rule FROM grants g JOIN secrets s USING (secret_id)"
            " WHERE (?1 IS NULL OR g.user_id = ?1) AND (?2 IS NULL OR g.client_id = ?2)"
            " ORDER BY g.client_id, g.variable",
            (user_id, client_id),
        )
        return [Grant(*row) for row in rows.fetchall()]

    def grant_for(self, user_id: str, client_id: str, variable: str) -> Grant | None:
        found = [g for g in self.grants(user_id, client_id) if g.variable == variable]
        return found[0] if found else None

    # --- grant requests (raised by `serve --local`, decided anywhere) ---

    def open_grant_request(self, request: StoredGrantRequest) -> None:
        """Keep `request` where other processes can decide it; forgets day-old ones.

        At most `MAX_WAITING_REQUESTS` wait per agent: past that, a `VaultError` says so
        (a model calling in a loop cannot bury the user's own request)."""
        with self._write() as db:
            db.execute(
                "DELETE FROM grant_requests WHERE expires_at < ?",
                (time.time() - REQUESTS_KEPT_SECONDS,),
            )
            db.execute(
                "DELETE FROM grant_request_raisers"
                " WHERE request_id NOT IN (SELECT request_id FROM grant_requests)"
            )
            waiting = sum(
                StoredGrantRequest(*row).waited_for
                for row in db.execute(
                    f"{_SELECT_REQUESTS}"
                    " WHERE client_id = ? AND outcome IS NULL AND expires_at > ?",
                    (request.client_id, time.time()),
                )
            )
            if waiting >= MAX_WAITING_REQUESTS:
                raise VaultError(
                    f"{waiting} grant requests of the agent {request.client_id!r} are waiting "
                    f"already; decide them first (`{command('local', 'requests')}`)"
                )
            db.execute(
                "INSERT INTO grant_requests (request_id, client_id, variable, client, opened_at,"
                " expires_at, outcome, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.request_id,
                    request.client_id,
                    request.variable,
                    request.client,
                    request.opened_at,
                    request.expires_at,
                    request.outcome,
                    request.decided_at,
                ),
            )
            if request.raised_by is not None:
                db.execute(
                    "INSERT INTO grant_request_raisers VALUES (?, ?)",
                    (request.request_id, request.raised_by),
                )

    def grant_requests(self) -> list[StoredGrantRequest]:
        """The requests still waiting for the user, oldest first (not those whose server
        is gone)."""
        rows = self._db().execute(
            f"{_SELECT_REQUESTS} WHERE outcome IS NULL AND expires_at > ? ORDER BY opened_at",
            (time.time(),),
        )
        return [
            request for row in rows.fetchall() if (request := StoredGrantRequest(*row)).waited_for
        ]

    def grant_request(self, request_id: str) -> StoredGrantRequest | None:
        row = (
            self._db().execute(f"{_SELECT_REQUESTS} WHERE request_id = ?", (request_id,)).fetchone()
        )
        return None if row is None else StoredGrantRequest(*row)

    def decide_grant_request(self, request_id: str, outcome: str) -> bool:
        """Record the user's decision on a waiting request; False if none was waiting.

        "expired": its call no longer waits (declined, timed out, its server stopped).
        """
        with self._write() as db:
            return self._decide(db, request_id, outcome)

    def _decide(self, db: sqlite3.Connection, request_id: str, outcome: str) -> bool:
        now = time.time()
        return bool(
            db.execute(
                "UPDATE grant_requests SET outcome = ?, decided_at = ?"
                " WHERE request_id = ? AND outcome IS NULL AND expires_at > ?",
                (outcome, now, request_id, now),
            ).rowcount
        )

    # --- Google identities (for the Secret Manager subset) ---

    def add_google_identity(
        self, email: str, public_key_pem: str, *, readable_secrets: list[str]
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO google_identities VALUES (?, ?, ?)",
                (email, public_key_pem, json.dumps(readable_secrets)),
            )

    def google_identity(self, email: str) -> GoogleIdentity | None:
        row = (
            self._db()
            .execute(
                "SELECT email, public_key_pem, readable_secrets FROM google_identities"
                " WHERE email = ?",
                (email,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return GoogleIdentity(row[0], row[1], frozenset(json.loads(row[2])))

    # --- audit ---

    def record(
        self,
        action: str,
        outcome: str,
        *,
        client_id: str | None = None,
        user_id: str | None = None,
        subject: str | None = None,
        reason: str | None = None,
    ) -> None:
        entry = AuditEntry(time.time(), client_id, user_id, action, subject, outcome, reason)
        self.append_audit([entry])

    def audit_retention(self) -> AuditRetention:
        """How long the audit table keeps rows (PIPER_LOCAL_AUDIT_*), read once, when first
        asked; a `VaultError` says which setting is wrong."""
        if self._retention is None:
            self._retention = _read_audit_retention()
        return self._retention

    @cached_property
    def max_audit_rows(self) -> int:
        """The newest rows the audit table keeps; set lower, it keeps fewer."""
        return self.audit_retention().max_rows

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Write `entries` in one transaction, dropping what the retention no longer keeps.

        Both deletes cost a seek when nothing is due: ids grow with time, so the
        oldest rows are the first ones.
        """
        # Read before the write lock is taken: the first read loads pydantic-settings.
        max_rows, max_age = self.max_audit_rows, self.audit_retention().max_age_seconds
        with self._write() as db:
            db.executemany(
                "INSERT INTO audit (at, client_id, user_id, action, subject, outcome, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.at, e.client_id, e.user_id, e.action, e.subject, e.outcome, e.reason)
                    for e in entries
                ],
            )
            (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
            db.execute("DELETE FROM audit WHERE id <= ?", (last - max_rows,))
            if max_age is not None:
                db.execute(
                    "DELETE FROM audit WHERE id < coalesce("
                    "(SELECT id FROM audit WHERE at >= ? ORDER BY id LIMIT 1), ?)",
                    (time.time() - max_age, last),
                )

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        rows = self._db().execute(
            "SELECT at, client_id, user_id, action, subject, outcome, reason FROM audit"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditEntry(*row) for row in reversed(rows.fetchall())]
