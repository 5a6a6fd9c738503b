"""Issue 10.8: `piper-mcp serve` over stdio against a host that sends or reads badly.

Each test is a real host: a subprocess with stdin and stdout as pipes, and stderr in a
file (a pipe nobody reads could block the server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import initialize

WAIT = 30.0  # seconds, a bound no healthy run comes near
MiB = 1 << 20


@dataclass
class Host:
    """The host's end of a stdio server."""

    process: subprocess.Popen[bytes]
    log: Path

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_message(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message).encode() + b"\n")

    def answer(self) -> dict[str, Any]:
        return self.answers(1)[0]

    def answers(self, count: int) -> list[dict[str, Any]]:
        """The next `count` lines on stdout, within WAIT seconds."""
        stdout = self.process.stdout
        assert stdout is not None
        lines: list[bytes] = []

        def read() -> None:
            while len(lines) < count and (line := stdout.readline()):
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(WAIT)
        assert len(lines) == count, f"{len(lines)} of {count} answers:\n{self.stderr()}"
        return [json.loads(line) for line in lines]

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def memory_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for the server")


@pytest.fixture
def host(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Host]]:
    """`host()`: `piper-mcp serve` over stdio, past the handshake."""
    started: list[Host] = []

    def start() -> Host:
        log = tmp_path / f"stderr-{len(started)}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "piper_mcp", "serve"],
                env=cli_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        serving = Host(process, log)
        started.append(serving)
        serving.send_message(initialize("stdio-faults"))
        assert serving.answer()["id"] == 0
        serving.send_message({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return serving

    yield start
    for serving in started:
        if serving.process.poll() is None:
            serving.process.kill()
        serving.process.wait(timeout=WAIT)


def ping(request_id: int) -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % request_id


def test_a_line_that_cannot_be_read_gets_the_jsonrpc_error_with_its_id_if_readable(
    host: Callable[[], Host],
) -> None:
    server = host()
    canary = "canary-7d1e-never-logged"
    server.send(f"{canary} is not JSON\n".encode())
    server.send(b'{"jsonrpc":"2.0","id":5,"method":"ping","params":{"x":"\\ud800"}}\n')
    server.send(b'{"jsonrpc":"2.0","id":"six","method":"ping","params":{"x":"\xff"}}\n')
    server.send(f'{{"jsonrpc":"2.0","id":7,"note":"{canary}"}}\n'.encode())
    server.send(b'{"jsonrpc":"2.0","method":42}\n')
    server.send(b'{"jsonrpc":"2.0","id":9,"result":"not an object"}\n')  # a broken answer
    server.send(b'{"id":11,"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}\n")
    server.send(ping(10))

    answers = server.answers(7)

    def error(request_id: object, code: int) -> tuple[object, int]:
        return request_id, code

    assert [error(a["id"], a["error"]["code"]) for a in answers[:6]] == [
        error(None, -32700),  # Parse error, no id to read
        error(5, -32700),  # a lone surrogate
        error("six", -32700),  # not UTF-8
        error(7, -32600),  # Invalid Request: JSON, but not JSON-RPC
        error(None, -32600),
        error(None, -32700),  # nested too deep for any parser here
    ]
    assert answers[0]["error"]["message"].startswith("Parse error")
    assert answers[3]["error"]["message"].startswith("Invalid Request")
    assert answers[6] == {"jsonrpc": "2.0", "id": 10, "result": {}}  # no answer to id 9
    log = server.stderr()
    assert log.count("on stdin") == 7, log  # one line each, the broken answer included
    assert "id 5)" in log and "id 'six')" in log
    assert canary not in log and "\\ud800" not in log


def test_an_oversized_line_is_skipped_without_being_held_and_serving_goes_on(
    host: Callable[[], Host],
) -> None:
    server = host()
    before = server.memory_kib()
    line_bytes = 64 * MiB
    server.send(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"')
    block = b"x" * MiB
    for _ in range(line_bytes // MiB):
        server.send(block)
    server.send(b'"}}\n' + ping(2))

    refused = server.answer()
    assert refused["id"] is None and refused["error"]["code"] == -32600
    assert "65536 bytes" in refused["error"]["message"]
    assert "PIPER_MCP_MAX_REQUEST_BYTES" in refused["error"]["message"]
    assert server.answer() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    # Holding the line once would take its whole size; the peak stays far below it.
    assert server.memory_kib("VmHWM") - before < line_bytes // 1024 // 4
    assert "over 65536 bytes on stdin (67108" in server.stderr()


def test_a_host_that_stops_reading_holds_the_server_back_not_its_memory(
    host: Callable[[], Host],
) -> None:
    server = host()
    before = server.memory_kib()
    requests = 10_000
    data = b"".join(ping(100 + n) for n in range(requests))
    written = [0]

    def write_all() -> None:
        assert server.process.stdin is not None
        for start in range(0, len(data), 4096):
            server.process.stdin.write(data[start : start + 4096])
            server.process.stdin.flush()
            written[0] = start + 4096

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    # The host writes until the server stops taking its input (or takes all of it).
    last, still_since = -1, time.monotonic()
    while writer.is_alive() and time.monotonic() - still_since < 2:
        if written[0] != last:
            last, still_since = written[0], time.monotonic()
        time.sleep(0.05)
    assert writer.is_alive(), "the server read every request with no one reading its answers"
    grown_kib = server.memory_kib() - before
    # Unbounded, each waiting answer costs a few KiB; 10 000 of them, far over this.
    assert grown_kib < 16 * 1024, f"{grown_kib} KiB for answers no one reads"

    # Once the host reads again, every request gets its answer.
    answered = {answer["id"] for answer in server.answers(requests)}
    assert answered == set(range(100, 100 + requests))
    writer.join(WAIT)


def test_a_host_that_closes_stdout_ends_the_server_quietly(host: Callable[[], Host]) -> None:
    server = host()
    assert server.process.stdout is not None
    server.process.stdout.close()
    server.send(ping(3))  # its answer meets a closed pipe; stdin stays open

    assert server.process.wait(timeout=WAIT) == 0
    log = server.stderr()
    assert "Traceback" not in log and "Exception" not in log, log
    assert "The host closed stdout; stopping." in log
