"""The vault keeps every committed write: through SIGKILL, and with many writers at once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from piper_mcp.local.storage import DamagedSecretError
from piper_mcp.local.vault import StoredGrantRequest, Vault, VaultError

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from piper_mcp.local.vault import Vault

    vault = Vault.open(Path(sys.argv[1]))
    prefix, count = sys.argv[2], int(sys.argv[3])
    me = vault.local_user_id
    for n in range(count):
        name = f"{prefix}-{n}"
        vault.put_secret(name, "value-" + name, owner_user_id=me)
        vault.record("burst", "ok", subject=name)
        print(name, flush=True)  # only after the commit returned
    """
)


def writer(home: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), prefix, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def integrity(home: Path) -> str:
    with sqlite3.connect(home / "vault.sqlite3") as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    vault, _ = Vault.init(tmp_path / "vault")
    vault.close()
    return tmp_path / "vault"


def test_sigkill_in_a_burst_of_writes_loses_no_committed_write(home: Path) -> None:
    process = writer(home, "burst", 100_000)
    assert process.stdout is not None
    committed = [process.stdout.readline().strip() for _ in range(200)]
    process.send_signal(signal.SIGKILL)
    committed += [line.strip() for line in process.stdout if line.strip()]
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert integrity(home) == "ok"
    vault = Vault.open(home)
    stored = {secret.name for secret in vault.secrets()}
    assert set(committed) <= stored
    assert len(stored) < 100_000  # it really was killed mid-burst
    for name in committed[-5:]:
        found = vault.find_secret(name)
        assert found is not None
        assert vault.secret_value(found.secret_id) == "value-" + name


def test_concurrent_writers_and_readers_lose_nothing(home: Path) -> None:
    writers = [writer(home, f"w{n}", 60) for n in range(4)]
    reader = Vault.open(home)
    while any(process.poll() is None for process in writers):
        assert all(s.name.startswith("w") for s in reader.secrets())
    for process in writers:
        _, err = process.communicate()
        assert process.returncode == 0, err
    assert integrity(home) == "ok"
    names = {secret.name for secret in reader.secrets()}
    assert names == {f"w{n}-{i}" for n in range(4) for i in range(60)}
    assert len([e for e in reader.audit(1000) if e.action == "burst"]) == 240


def test_a_ciphertext_moved_to_another_secret_does_not_decrypt(home: Path) -> None:
    """Associated data binds each ciphertext to its secret id."""
    vault = Vault.open(home)
    me = vault.local_user_id
    first = vault.put_secret("first", "one", owner_user_id=me)
    second = vault.put_secret("second", "two", owner_user_id=me)
    with sqlite3.connect(home / "vault.sqlite3") as db:
        sealed = db.execute("SELECT sealed FROM secrets WHERE secret_id = ?", (first,)).fetchone()
        db.execute("UPDATE secrets SET sealed = ? WHERE secret_id = ?", (sealed[0], second))
    assert vault.secret_value(first) == "one"
    with pytest.raises(DamagedSecretError, match=rf"'second' \({second}\) is damaged"):
        vault.secret_value(second)


def test_init_refuses_a_stray_key_without_a_database(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    home.mkdir()
    (home / "vault.key").write_text("old key")
    with pytest.raises(VaultError, match="exists without a vault database"):
        Vault.init(home)
    assert (home / "vault.key").read_text() == "old key"


def test_a_schema_1_vault_is_migrated_on_open_and_keeps_its_grants(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("kept", "kept-value", owner_user_id=me)
    vault.grant(me, "local-agent", "kept_variable", "kept")
    vault.close()
    with sqlite3.connect(home / "vault.sqlite3") as db:  # what piper-mcp 0.1 wrote
        db.execute("ALTER TABLE agents DROP COLUMN secretless")
        db.execute("ALTER TABLE grants DROP COLUMN grant_id")
        db.execute("ALTER TABLE grants DROP COLUMN api_rule")
        db.execute("DROP TABLE grant_requests")
        db.execute("DROP TABLE grant_request_raisers")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")

    migrated = Vault.open(home)
    [grant] = migrated.grants(me)
    assert grant.variable == "kept_variable" and grant.grant_id.startswith("grant-")
    agent = migrated.agent("local-agent")
    assert agent is not None and not agent.secretless
    assert migrated.secret_value(grant.credential_id) == "kept-value"
    Vault.open(home).close()  # opening again changes nothing


def test_a_schema_2_vault_gains_api_rules_and_keeps_its_grants(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("kept", "kept-value", owner_user_id=me)
    vault.grant(me, "local-agent", "kept_variable", "kept")
    vault.close()
    with sqlite3.connect(home / "vault.sqlite3") as db:  # what piper-mcp before call_api wrote
        db.execute("ALTER TABLE grants DROP COLUMN api_rule")
        db.execute("DROP TABLE grant_requests")
        db.execute("DROP TABLE grant_request_raisers")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

    migrated = Vault.open(home)
    [grant] = migrated.grants(me)
    assert grant.variable == "kept_variable" and grant.api_rule is None
    regranted, _ = migrated.grant(me, "local-agent", "kept_variable", "kept", api_rule='{"x": 1}')
    assert migrated.grants(me) == [regranted] and regranted.api_rule == '{"x": 1}'


def test_a_schema_3_vault_gains_grant_requests_and_keeps_its_grants(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("kept", "kept-value", owner_user_id=me)
    vault.grant(me, "local-agent", "kept_variable", "kept")
    vault.close()
    with sqlite3.connect(home / "vault.sqlite3") as db:  # what piper-mcp before the dashboard wrote
        db.execute("DROP TABLE grant_requests")
        db.execute("DROP TABLE grant_request_raisers")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

    migrated = Vault.open(home)
    assert [g.variable for g in migrated.grants(me)] == ["kept_variable"]
    assert migrated.grant_requests() == []
    with sqlite3.connect(home / "vault.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "5",
        )


def test_a_schema_4_vault_keeps_its_waiting_requests_as_waited_for(tmp_path: Path) -> None:
    """Requests from before servers were named: nobody knows whose they are, so they wait
    until they expire, as they did."""
    home = tmp_path / "vault"
    vault, _ = Vault.init(home)
    vault.add_agent("ci-bot", None, owner_user_id=vault.local_user_id, variables=["npm_token"])
    now = time.time()
    vault.open_grant_request(
        StoredGrantRequest("req-old", "ci-bot", "npm_token", "Host", now, now + 600, None, None)
    )
    vault.close()
    with sqlite3.connect(home / "vault.sqlite3") as db:  # what piper-mcp before this wrote
        db.execute("DROP TABLE grant_request_raisers")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

    migrated = Vault.open(home)
    assert [(r.request_id, r.raised_by) for r in migrated.grant_requests()] == [("req-old", None)]
    with sqlite3.connect(home / "vault.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "5",
        )
        # A schema-4 server still running after the upgrade writes its requests as it did.
        db.execute(
            "INSERT INTO grant_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("req-from-an-old-server", "ci-bot", "npm_token", "Host", now, now + 600, None, None),
        )
    assert [r.request_id for r in migrated.grant_requests()] == [
        "req-old",
        "req-from-an-old-server",
    ]


def test_a_vault_migrated_further_meanwhile_is_not_set_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as schema 4, then a newer piper-mcp migrates it before this one takes the lock."""
    home = tmp_path / "vault"
    Vault.init(home)[0].close()
    with sqlite3.connect(home / "vault.sqlite3") as db:
        db.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    read = Vault._meta
    monkeypatch.setattr(
        Vault, "_meta", lambda self, key: "4" if key == "schema_version" else read(self, key)
    )
    with pytest.raises(VaultError, match="schema 6, newer than this piper-mcp"):
        Vault.open(home)
    with sqlite3.connect(home / "vault.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "6",
        )


def test_a_vault_from_a_newer_piper_mcp_is_refused_with_advice(tmp_path: Path) -> None:
    home = tmp_path / "vault"
    Vault.init(home)[0].close()
    with sqlite3.connect(home / "vault.sqlite3") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(VaultError, match="schema 99, newer than this piper-mcp"):
        Vault.open(home)


INIT_AT_ONCE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from piper_mcp.local.vault import Vault

    home, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():  # every process imported and waiting: then all at once
        time.sleep(0.001)
    vault, created = Vault.init(home)
    print(vault.local_instance_id, created)
    vault.close()
    """
)


def test_inits_racing_for_one_home_all_end_with_the_same_whole_vault(tmp_path: Path) -> None:
    """Two `serve --local` started together on a fresh machine both create the vault."""
    home, go = tmp_path / "vault", tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", INIT_AT_ONCE, str(home), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.5)  # let them import
    go.touch()
    answers = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * 4, answers
    said = [out.split() for out, _ in answers]
    assert len({instance_id for instance_id, _ in said}) == 1
    assert [created for _, created in said].count("True") == 1
    # SQLite's own write-ahead log may outlive closers that overlap; no other file may
    left = {path.name for path in home.iterdir()} - {"vault.sqlite3-wal", "vault.sqlite3-shm"}
    assert sorted(left) == ["vault.key", "vault.sqlite3"]
    assert integrity(home) == "ok"
