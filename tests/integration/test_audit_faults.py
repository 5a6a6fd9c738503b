"""Issue 10.2: the audit trail keeps every entry through shared rotation, torn lines and bad bytes.

Two servers sharing a vault append to one trail; a crash or a full disk can leave a torn
last line; a stray edit can leave anything. Writers lose nothing and say why they fail;
readers (`recent`, `piper-mcp audit`, `piper://audit`) skip what they cannot read and
say how much.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client, MCPError

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.server.audit import AuditError, AuditTrail
from tests.processes import piper_mcp
from tests.protocol.conftest import text_of
from tests.protocol.test_audit_and_revocation import audited_server

WRITER = """\
import sys
from pathlib import Path
from piper_mcp.server.audit import AuditTrail
who, count, max_bytes = sys.argv[1:]
for path in sys.stdin:  # one fresh trail per round
    trail = AuditTrail(Path(path.strip()), max_bytes=int(max_bytes))
    for n in range(int(count)):
        trail.record(client=who, variable=f"{who}-{n}", outcome="ok")
    print("done", flush=True)
"""

ENTRY = b'{"time": "2026-11-28T09:00:00.000+00:00", "variable": "%s", "outcome": "ok"}'
UNREADABLE = [
    b'{"time": "2026-11-28T09:00:00.000+00:00", "variable": "caf\xe9"}',  # Latin-1, not UTF-8
    b"not json at all",
    b'["an", "array"]',
    b"42",
    b'{"variable": "\\ud800"}',  # a lone surrogate: parses, cannot be printed
    b"[" * 100_000,  # deeper than the parser's recursion limit
]


def trail_lines(path: Path) -> list[bytes]:
    files = [path, *(path.with_name(f"{path.name}.{n}") for n in (1, 2, 3))]
    return [line for file in files if file.exists() for line in file.read_bytes().splitlines()]


def piper_mcp_audit(trail: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return piper_mcp("audit", *args, env={**os.environ, "PIPER_MCP_AUDIT_FILE": str(trail)})


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A trail with two good entries around six lines no reader can use."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join([ENTRY % b"first", *UNREADABLE, ENTRY % b"last", b""]))
    return path


def full_disk_at(folder: Path) -> Path:
    """A trail whose every write fails as on a full disk (/dev/full answers ENOSPC)."""
    path = folder / "audit.jsonl"
    path.symlink_to("/dev/full")
    return path


def directory_at(folder: Path) -> Path:
    path = folder / "audit.jsonl"
    path.mkdir()
    return path


def under_a_file(folder: Path) -> Path:
    (folder / "folder").write_text("")
    return folder / "folder" / "audit.jsonl"


def test_two_processes_rotating_one_trail_lose_no_entry(tmp_path: Path) -> None:
    count, max_bytes = 400, 20_000  # about 3.6 files' worth: rotates 3 times, drops nothing
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, who, str(count), str(max_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    try:
        for attempt in range(10):  # each round both rotate one file at nearly the same moments
            path = tmp_path / str(attempt) / "audit.jsonl"
            for writer in writers:
                assert writer.stdin
                writer.stdin.write(f"{path}\n")
                writer.stdin.flush()
            for writer in writers:
                assert writer.stdout
                assert writer.stdout.readline() == "done\n", "a writer failed"
            assert path.with_name("audit.jsonl.3").exists()
            variables = [json.loads(line)["variable"] for line in trail_lines(path)]
            assert sorted(variables) == sorted(f"{who}-{n}" for who in "ab" for n in range(count))
    finally:
        for writer in writers:
            _, err = writer.communicate(timeout=60)  # closes stdin: the writer's loop ends
            assert writer.returncode == 0, err


def test_an_append_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(ENTRY % b"before" + b'\n{"time": "2026-11-28T09:00:01.0')  # crashed mid-line
    AuditTrail(path).record(variable="after", outcome="ok")
    recent = AuditTrail(path).recent()
    assert [entry["variable"] for entry in recent] == ["before", "after"]
    assert recent.skipped == 1  # the fragment


def test_an_append_after_another_writer_tore_a_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    trail.record(variable="mine", outcome="ok")
    with path.open("ab") as other:  # another process, cut off mid-line (disk full)
        other.write(b'{"time": "2026-11-28T09:00:01.0')
    trail.record(variable="mine again", outcome="ok")
    recent = trail.recent()
    assert [entry["variable"] for entry in recent] == ["mine", "mine again"]
    assert recent.skipped == 1


def test_a_trail_idle_through_other_writers_rotations_writes_to_the_current_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    idle, busy = AuditTrail(path, max_bytes=1000), AuditTrail(path, max_bytes=1000)
    idle.record(variable="idle 1", outcome="ok")
    for n in range(100):  # rotates the file `idle` holds open out of existence
        busy.record(variable=f"busy {n}", outcome="ok")
    idle.record(variable="idle 2", outcome="ok")
    assert AuditTrail(path).recent(1)[0]["variable"] == "idle 2"


def test_recent_skips_unreadable_lines_and_counts_them(damaged: Path) -> None:
    recent = AuditTrail(damaged).recent()
    assert [entry["variable"] for entry in recent] == ["first", "last"]
    assert recent.skipped == len(UNREADABLE)


def test_piper_mcp_audit_skips_unreadable_lines_and_says_how_many(damaged: Path) -> None:
    listed, as_json = piper_mcp_audit(damaged), piper_mcp_audit(damaged, "--json")
    for done in (listed, as_json):
        assert done.returncode == 0, done.stderr
        skipped = f"skipped {len(UNREADABLE)} unreadable lines in {damaged}"
        assert done.stderr == f"piper-mcp: {skipped}\n"
    assert [line.split()[2] for line in listed.stdout.splitlines()] == ["'first'", "'last'"]
    assert [entry["variable"] for entry in json.loads(as_json.stdout)] == ["first", "last"]


@pytest.mark.anyio
async def test_the_audit_resource_skips_unreadable_lines_and_says_how_many(
    piper: LocalBackend, damaged: Path
) -> None:
    async with Client(audited_server(piper, damaged), mode="legacy") as mcp:  # type: ignore[arg-type]
        [content] = (await mcp.read_resource("piper://audit")).contents
    page = json.loads(content.text)  # type: ignore[union-attr]
    assert [entry["variable"] for entry in page["entries"]] == ["first", "last"]
    assert page["skipped"] == len(UNREADABLE)


@pytest.mark.anyio
async def test_an_unreadable_trail_is_a_clear_error_for_every_reader(
    piper: LocalBackend, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()
    said = f"cannot read the audit trail at {path}: it is a directory"
    done = piper_mcp_audit(path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"piper-mcp: {said}. ") and "PIPER_MCP_AUDIT_FILE" in done.stderr
    async with Client(audited_server(piper, path), mode="legacy") as mcp:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as caught:
            await mcp.read_resource("piper://audit")
    assert said in caught.value.error.message


@pytest.mark.parametrize(
    ("unwritable", "cause"),
    [
        (full_disk_at, "the disk is full"),
        (directory_at, "it is a directory"),
        (under_a_file, "a folder on its path is a file"),
    ],
)
def test_a_failed_write_names_the_file_and_the_cause(
    tmp_path: Path, unwritable: Callable[[Path], Path], cause: str
) -> None:
    path = unwritable(tmp_path)
    with pytest.raises(AuditError) as caught:
        AuditTrail(path).record(variable="x", outcome="ok")
    assert str(caught.value).startswith(f"cannot write the audit trail at {path}: {cause}. ")
    assert "PIPER_MCP_AUDIT_FILE" in str(caught.value)


@pytest.mark.anyio
async def test_get_secret_withholds_the_credential_it_cannot_audit(
    piper: LocalBackend, tmp_path: Path
) -> None:
    full_disk = full_disk_at(tmp_path)
    async with Client(audited_server(piper, full_disk), mode="legacy") as mcp:  # type: ignore[arg-type]
        granted = await mcp.call_tool("get_secret", {"variable": "OpenAI API Key"})
        refused = await mcp.call_tool("get_secret", {"variable": "PATH"})
    cannot = f"this call could not be audited: cannot write the audit trail at {full_disk}: "
    assert granted.is_error and granted.structured_content is None
    assert "piper-sts-" not in text_of(granted)
    assert "The credential was withheld because " + cannot + "the disk is full" in text_of(granted)
    assert refused.is_error
    assert "Refused (undeclared), and " + cannot + "the disk is full" in text_of(refused)


def test_the_last_entries_are_read_without_reading_what_comes_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`piper-mcp audit --limit 1` on a trail whose last line follows a gigabyte of junk."""
    trail = tmp_path / "audit.jsonl"
    with trail.open("wb") as file:
        file.truncate(1 << 30)  # sparse
        file.seek(0, os.SEEK_END)
        file.write(b"\n" + json.dumps({"variable": "last", "outcome": "ok"}).encode() + b"\n")
    read: list[int] = []
    real_open = Path.open

    def counting_open(path: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        file = real_open(path, *args, **kwargs)  # type: ignore[call-overload]
        real_read = file.read

        def read_counted(size: int = -1) -> bytes:
            data: bytes = real_read(size)
            read.append(len(data))
            return data

        file.read = read_counted
        return file

    monkeypatch.setattr(Path, "open", counting_open)
    entries = AuditTrail(trail).recent(1)
    assert [entry["variable"] for entry in entries] == ["last"]
    assert sum(read) <= 2 * 64 * 1024, f"read {sum(read)} bytes for one entry"
