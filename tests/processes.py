"""Starting piper-mcp's own servers as subprocesses, as a person or a host would."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def mcp_http_servers(env: dict[str, str]) -> Iterator[Callable[[str], str]]:
    """`start(transport)` runs `piper-mcp serve --local` over HTTP on a free port: its URL.

    Every server started is terminated when the block ends.
    """
    started: list[subprocess.Popen[str]] = []

    def start(transport: str) -> str:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piper_mcp",
                "serve",
                "--local",
                "--transport",
                transport,
                "--port",
                "0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"serving MCP at (\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError(f"serve exited with {process.wait()}")

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            process.communicate(timeout=20)
