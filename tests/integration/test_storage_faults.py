"""Issue 10, items 3-7: a full, read-only, locked or damaged PIPER_HOME, said as such.

The faults are real: another process holds the write lock, a small tmpfs
fills up, files and folders are made read-only (`chmod`, or `chattr +i` when
the tests run as root, whom `chmod` does not stop), bytes are overwritten on
disk, and `local init` runs under a file-size limit. What is asserted is what
a person or a model sees: MCP tool errors, HTTP bodies, one-line command
errors, stderr.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.storage import (
    BUSY_TIMEOUT_SECONDS,
    FULL,
    LOCKED,
    StorageError,
    StorageFaultLog,
)
from piper_mcp.local.vault import Vault
from piper_mcp.piper.protocol_names import STORAGE_UNAVAILABLE
from piper_mcp.piper.retry import RetryPolicy
from piper_mcp.server.app import build_server
from piper_mcp.server.serve import build_service
from piper_mcp.server.settings import ServeSettings
from tests.conftest import AGENT_ID, INSTANCE_ID, OPENAI_SECRET, credential_id
from tests.protocol.conftest import text_of

pytestmark = pytest.mark.anyio

VARIABLE = "openai_api_key"
SECRET = "My OpenAI key"
VALUE = "sk-canary-storage-faults-5e0d"
ROOT = os.geteuid() == 0

HOLD_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes this pipe
"""


# --- the vault, and `serve --local` in-process ---


@pytest.fixture
def piper_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    return home


def seed(home: Path) -> Path:
    """A vault whose `local-agent` is granted SECRET as VARIABLE; its database file."""
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret(SECRET, VALUE, owner_user_id=me)
    vault.grant(me, DEFAULT_AGENT, VARIABLE, SECRET)
    vault.close()
    return home / "vault.sqlite3"


@asynccontextmanager
async def serve_local() -> AsyncIterator[Client]:
    """What `piper-mcp serve --local` builds, over the vault in PIPER_HOME, and a client of it."""
    with ExitStack() as stack:
        service = build_service(ServeSettings(local=True), stack)
        async with Client(build_server(service)) as client:
            yield client


async def get_secret(mcp: Client) -> Any:
    return await mcp.call_tool("get_secret", {"variable": VARIABLE})


# --- real faults ---


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another process holds the vault's write lock, as a `sqlite3` shell mid-transaction does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a folder) cannot be written: `chmod`, or `chattr +i` as root."""
    if not ROOT:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if not shutil.which("chattr"):
        pytest.skip("running as root, and without chattr nothing here is read-only")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"running as root, and chattr +i failed: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    """A real file system of `size` at `where`, to fill up; skipped where one cannot be mounted."""
    where.mkdir()
    mount = shutil.which("mount")
    mounted = (
        subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if mount
        else None
    )
    if mounted is None or mounted.returncode:
        pytest.skip("a full disk needs a small tmpfs, which only root with CAP_SYS_ADMIN mounts")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; remove it to free the space again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:  # unbuffered: nothing left to fail at close
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def damage_page_of(database: Path, table: str) -> None:
    """Overwrite the b-tree page header of `table`'s root page, as a bad sector would."""
    with sqlite3.connect(database) as db:
        (page,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    with database.open("r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(b"\xff" * 16)


def flip_a_byte_of(database: Path, secret_name: str) -> None:
    """Change one byte of a stored ciphertext, as bit rot would."""
    with sqlite3.connect(database) as db:
        (sealed,) = db.execute(
            "SELECT sealed FROM secrets WHERE name = ?", (secret_name,)
        ).fetchone()
        flipped = bytearray(sealed)
        flipped[len(flipped) // 2] ^= 0x01
        db.execute("UPDATE secrets SET sealed = ? WHERE name = ?", (bytes(flipped), secret_name))


def piper_mcp(
    *args: str, limit_file_size: int | None = None, stdin_text: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`piper-mcp ARGS` as a person runs it, optionally under a file-size limit."""

    def limited() -> None:
        assert limit_file_size is not None
        # Past the limit a write fails with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "piper_mcp", *args],
        input=stdin_text if stdin_text is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        preexec_fn=limited if limit_file_size is not None else None,
        check=False,
    )


# --- item 3: the cause, named ---


async def test_a_full_piper_home_is_named_in_the_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        home = disk / "piper-home"
        monkeypatch.setenv("PIPER_HOME", str(home))
        database = seed(home)
        async with serve_local() as mcp:
            assert (await get_secret(mcp)).is_error is False
            filler = fill(disk)
            refused = await get_secret(mcp)
            assert refused.is_error
            said = text_of(refused)
            assert f"PIPER_HOME is full ({database}): free space on its disk" in said
            assert "PIPER_*_URL" not in said
            filler.unlink()
            assert (await get_secret(mcp)).is_error is False  # serving again, nothing restarted


async def test_a_read_only_vault_file_is_named_in_the_tool_error(piper_home: Path) -> None:
    database = seed(piper_home)
    with read_only(database):
        async with serve_local() as mcp:
            refused = await get_secret(mcp)
    assert refused.is_error
    said = text_of(refused)
    assert f"PIPER_HOME is read-only ({database}): make the folder and its files writable" in said
    assert "PIPER_*_URL" not in said


def test_serve_local_in_a_read_only_folder_says_so_in_one_line(piper_home: Path) -> None:
    database = seed(piper_home)
    with read_only(piper_home):
        done = piper_mcp("serve", "--local")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"piper-mcp: PIPER_HOME is read-only ({database}): make the folder and its files "
        "writable by this user, or set PIPER_HOME to a writable copy."
    ]


def test_the_backend_logs_each_storage_cause_once_and_no_traceback(piper_home: Path) -> None:
    """Sixteen failing requests, two causes: two lines on stderr, not thirty-two tracebacks."""
    database = seed(piper_home)
    vault = Vault.open(piper_home)
    me = vault.local_user_id
    vault.put_secret("Healthy", "healthy-value", owner_user_id=me)
    vault.add_agent("research", None, owner_user_id=me, variables=[VARIABLE, "healthy"])
    vault.set_secretless("research", True)
    vault.grant(me, "research", VARIABLE, SECRET)
    vault.grant(me, "research", "healthy", "Healthy")
    asking = {"agentClientId": "research", "instanceId": vault.local_instance_id}
    damaged_body = {**asking, "credentialIds": [credential_of(vault, SECRET)]}
    healthy_body = {**asking, "credentialIds": [credential_of(vault, "Healthy")]}
    vault.close()
    flip_a_byte_of(database, SECRET)
    server = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", "local", "serve", "--port", "0", "--link-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PIPER_HOME": str(piper_home)},
    )
    assert server.stdout is not None
    try:
        base = next(line.split()[-1] for line in server.stdout if "protocol:" in line)
        scoped = f"{base}/getscopedgcpcredentials"
        damaged = [httpx.post(scoped, json=damaged_body, timeout=30) for _ in range(10)]
        with write_lock_held(database), ThreadPoolExecutor(6) as pool:
            locked = list(
                pool.map(lambda _: httpx.post(scoped, json=healthy_body, timeout=30), range(6))
            )
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    assert {(a.status_code, a.json()["error"]) for a in damaged} == {(500, STORAGE_UNAVAILABLE)}
    assert {(a.status_code, a.json()["error"]) for a in locked} == {(503, STORAGE_UNAVAILABLE)}
    assert "Traceback" not in stderr
    assert stderr.count(f"The stored value of {SECRET!r}") == 1, stderr
    assert stderr.count("PIPER_HOME is locked by another process") == 1, stderr


def credential_of(vault: Vault, name: str) -> str:
    found = vault.find_secret(name)
    assert found is not None
    return found.secret_id


def test_a_command_meeting_the_lock_says_so_in_one_line(piper_home: Path) -> None:
    database = seed(piper_home)
    with write_lock_held(database):
        started = time.monotonic()
        done = piper_mcp("local", "secret", "set", "Another", stdin_text="value")
        took = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"piper-mcp local: PIPER_HOME is locked by another process ({database}): it has held "
        f"the vault's write lock for more than {BUSY_TIMEOUT_SECONDS:g} s. Close it (an open "
        "`sqlite3` shell, a backup tool) and try again."
    ]
    assert took < BUSY_TIMEOUT_SECONDS + 10, took


def test_a_cause_is_logged_once_a_minute_with_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = StorageFaultLog(logging.getLogger("test.storage"), clock=lambda: now[0])
    full = StorageError(FULL, "PIPER_HOME is full (/x/vault.sqlite3): free space.")
    locked = StorageError(LOCKED, "PIPER_HOME is locked by another process (/x/vault.sqlite3).")
    with caplog.at_level(logging.ERROR, logger="test.storage"):
        for second in range(120):
            now[0] = float(second)
            log.report(full)
            log.report(locked)
    assert [record.getMessage() for record in caplog.records] == [
        "PIPER_HOME is full (/x/vault.sqlite3): free space.",
        "PIPER_HOME is locked by another process (/x/vault.sqlite3).",
        "PIPER_HOME is full (/x/vault.sqlite3): free space. "
        "(59 more failures like it since the last report)",
        "PIPER_HOME is locked by another process (/x/vault.sqlite3). "
        "(59 more failures like it since the last report)",
    ]
    assert all(record.exc_info is None for record in caplog.records)


# --- item 4: a stuck writer stalls nothing ---

# Every attempt at the scoped call waits out the lock once; the client makes three.
LOCKED_GET_SECRET_SECONDS = RetryPolicy().attempts * BUSY_TIMEOUT_SECONDS + 3


@pytest.fixture
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers in this process give up on a held lock sooner (the real wait is 2 s)."""
    monkeypatch.setattr("piper_mcp.local.vault.BUSY_TIMEOUT_SECONDS", 0.5)


async def test_a_writer_holding_the_lock_fails_get_secret_in_seconds_and_names_it(
    piper_home: Path, short_lock_wait: None
) -> None:
    database = seed(piper_home)
    async with serve_local() as mcp:
        assert (await get_secret(mcp)).is_error is False
        with write_lock_held(database):
            started = time.monotonic()
            refused = await get_secret(mcp)
            took = time.monotonic() - started
        assert refused.is_error
        said = text_of(refused)
        assert f"PIPER_HOME is locked by another process ({database})" in said
        assert "PIPER_*_URL" not in said
        assert took < LOCKED_GET_SECRET_SECONDS, took
        assert (await get_secret(mcp)).is_error is False  # the lock gone, served again


async def test_while_a_writer_holds_the_lock_reads_do_not_wait(
    piper_home: Path, short_lock_wait: None
) -> None:
    """Resolving, listing grants and the other tools answer while get_secret waits out the lock.

    Their audit rows are kept and written once the lock is gone; so is the
    record of the get_secret the lock refused.
    """
    database = seed(piper_home)
    answered: dict[str, float] = {}
    async with serve_local() as mcp:
        with write_lock_held(database):
            started = time.monotonic()

            async def timed(name: str, tool: str, arguments: dict[str, Any]) -> None:
                result = await mcp.call_tool(tool, arguments)
                answered[name] = time.monotonic() - started
                if name == "list_variables":
                    [listed] = result.structured_content["variables"]
                    assert listed["source"] == "piper" and listed["piper_problem"] is None

            async with anyio.create_task_group() as group:
                group.start_soon(timed, "get_secret", "get_secret", {"variable": VARIABLE})
                group.start_soon(timed, "list_variables", "list_variables", {})
                group.start_soon(timed, "check_link", "check_link", {})
                grants = await anyio.to_thread.run_sync(piper_mcp, "local", "grants", "--json")
                answered["local grants"] = time.monotonic() - started
        assert grants.returncode == 0
        assert [g["variable"] for g in json.loads(grants.stdout)] == [VARIABLE]
        assert answered["list_variables"] < 1, answered
        assert answered["check_link"] < 1, answered
        # The command's success is the proof that reads do not wait: a read held by the lock
        # fails after the busy timeout (how fast a new process starts is not measured here).
        assert (await get_secret(mcp)).is_error is False
    vault = Vault.open(piper_home)
    recorded = [(entry.action, entry.outcome) for entry in vault.audit(100)]
    assert ("getscopedgcpcredentials", STORAGE_UNAVAILABLE) in recorded
    assert recorded.count(("piper-resolve-variable-mapping", "ok")) >= 3  # under the lock too


# --- item 5: a failed `local init` leaves nothing behind ---


def test_a_failed_init_leaves_no_half_vault_and_can_simply_be_run_again(piper_home: Path) -> None:
    failed = piper_mcp("local", "init", limit_file_size=16 * 1024)  # the key fits, the rest not
    assert failed.returncode == 1
    [line] = failed.stderr.splitlines()
    assert line.startswith(
        f"piper-mcp local: PIPER_HOME could not be read or written ({piper_home}"
    )
    assert not piper_home.exists()  # created by the failed init, so removed with the rest

    again = piper_mcp("local", "init", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is True
    assert sorted(p.name for p in piper_home.iterdir()) == ["vault.key", "vault.sqlite3"]
    assert piper_mcp("local", "secret", "list").returncode == 0


async def test_a_failed_init_on_a_full_disk_keeps_the_folder_and_leaves_nothing_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_disk(tmp_path / "disk", size="1m") as disk:
        home = disk / "piper-home"
        home.mkdir()
        (home / "audit.jsonl").write_text("{}\n")  # the MCP server's own trail lives here too
        filler = fill(disk)
        failed = piper_mcp("local", "init", PIPER_HOME=str(home))
        assert failed.returncode == 1
        assert failed.stderr.splitlines() == [
            f"piper-mcp local: PIPER_HOME is full ({home / 'vault.sqlite3'}): free space on its "
            "disk (or raise the quota), then try again."
        ]
        assert sorted(p.name for p in home.iterdir()) == ["audit.jsonl"]
        filler.unlink()
        assert piper_mcp("local", "init", PIPER_HOME=str(home)).returncode == 0
        assert piper_mcp("local", "agent", "list", PIPER_HOME=str(home)).returncode == 0


# --- item 6: damage found early, and named ---


def test_a_damaged_database_stops_serve_local_at_start_with_what_to_do(piper_home: Path) -> None:
    database = seed(piper_home)
    damage_page_of(database, "secrets")
    for command in (("serve", "--local"), ("local", "serve", "--port", "0", "--link-port", "0")):
        done = piper_mcp(*command)
        assert done.returncode == 1, command
        [line] = done.stderr.splitlines()
        assert f"PIPER_HOME is damaged ({database}: " in line
        assert "restore vault.sqlite3 from a backup" in line


async def test_a_damaged_secret_gets_no_token_and_is_named_with_the_fix(piper_home: Path) -> None:
    database = seed(piper_home)
    flip_a_byte_of(database, SECRET)
    async with serve_local() as mcp:
        refused = await get_secret(mcp)
        assert refused.is_error
        said = text_of(refused)
        assert f"The stored value of {SECRET!r} (cred-" in said
        assert (
            f"is damaged: it fails its integrity check. Set it again with `piper-mcp local "
            f"secret set '{SECRET}'`." in said
        )
        assert "PIPER_*_URL" not in said
        done = piper_mcp("local", "secret", "set", SECRET, stdin_text=VALUE)
        assert done.returncode == 0, done.stderr
        assert (await get_secret(mcp)).is_error is False


def test_a_damaged_secret_is_named_by_every_route_that_would_read_it(piper: LocalBackend) -> None:
    """The raw exchange and a Secret Manager read with a token issued before the damage."""
    cid = credential_id(piper, OPENAI_SECRET)
    asking = {"agentClientId": AGENT_ID, "instanceId": INSTANCE_ID}
    scoped = httpx.post(
        f"{piper.base_url}/getscopedgcpcredentials", json={**asking, "credentialIds": [cid]}
    )
    token = scoped.json()["access_token"]
    flip_a_byte_of(piper.vault.database, OPENAI_SECRET)

    again = httpx.post(
        f"{piper.base_url}/getscopedgcpcredentials", json={**asking, "credentialIds": [cid]}
    )
    assert again.status_code == 500
    assert again.json()["error"] == STORAGE_UNAVAILABLE
    assert (
        f"The stored value of {OPENAI_SECRET!r} ({cid}) is damaged"
        in again.json()["error_description"]
    )
    exchange = httpx.post(
        f"{piper.base_url}/piper-exchange-sts-for-secret", json={**asking, "piperCredentialId": cid}
    )
    assert (exchange.status_code, exchange.json()["error"]) == (500, STORAGE_UNAVAILABLE)
    read = httpx.get(
        f"{piper.base_url}/v1/projects/{piper.project_id}/secrets/{cid}/versions/latest:access",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert read.status_code == 500
    error = read.json()["error"]
    assert error["status"] == "DATA_LOSS"
    assert f"The stored value of {OPENAI_SECRET!r} ({cid}) is damaged" in error["message"]
    assert "payload" not in read.json()


# --- item 7: the vault's audit table keeps what its settings say ---


async def test_the_audit_table_keeps_its_newest_rows_and_drops_old_ones(
    piper_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = seed(piper_home)
    day = 86_400
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO audit (at, action, outcome) VALUES (?, 'old', 'ok')",
            [(time.time() - 3 * day,)] * 10,
        )
    monkeypatch.setenv("PIPER_LOCAL_AUDIT_MAX_ROWS", "30")
    monkeypatch.setenv("PIPER_LOCAL_AUDIT_MAX_DAYS", "2")
    async with serve_local() as mcp:
        assert (await get_secret(mcp)).is_error is False
        assert {e.action for e in Vault.open(piper_home).audit(1000)} == {
            "piper-resolve-variable-mapping",
            "getscopedgcpcredentials",
        }  # the three-day-old rows went with the first write
        for _ in range(25):
            assert (await get_secret(mcp)).is_error is False
    kept = Vault.open(piper_home).audit(1000)
    assert len(kept) == 30
    assert kept[-1].action == "getscopedgcpcredentials"


def test_a_wrong_retention_setting_is_a_one_line_error(piper_home: Path) -> None:
    seed(piper_home)
    done = piper_mcp("local", "audit", PIPER_LOCAL_AUDIT_MAX_ROWS="none")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "piper-mcp local: PIPER_LOCAL_AUDIT_MAX_ROWS: Input should be a valid integer, unable "
        "to parse string as an integer"
    ]
