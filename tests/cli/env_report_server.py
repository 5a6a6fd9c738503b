"""A tiny MCP server that says how it was started, and never a value it was given.

Its one tool, `environment`, answers the NAMES of the environment variables the server
received, the sha256 of the values it is asked about, its process id, and what each of
its open file descriptors points to: what a test needs to check `piper-mcp exec`
without a secret in any output.

    python tests/cli/env_report_server.py              # MCP over stdio
    python tests/cli/env_report_server.py PORT         # streamable HTTP on 127.0.0.1:PORT
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="env-report")


@server.tool()
def environment(digests_of: list[str] | None = None) -> dict[str, Any]:
    """The environment's variable names, the sha256 of the named ones' values, pid, fds."""
    return {
        "names": sorted(os.environ),
        "sha256": {
            name: hashlib.sha256(os.environ[name].encode()).hexdigest()
            for name in digests_of or []
            if name in os.environ
        },
        "pid": os.getpid(),
        "descriptors": open_descriptors(),
    }


def open_descriptors() -> dict[str, str]:
    """fd number → what it points to (a path, `pipe:[…]`, `socket:[…]`), from /proc (Linux)."""
    folder = Path("/proc/self/fd")
    if not folder.is_dir():
        return {}
    found = {}
    for fd in os.listdir(folder):
        try:
            found[fd] = os.readlink(folder / fd)
        except OSError:  # the descriptor listdir itself had open, closed by now
            continue
    return found


if __name__ == "__main__":
    if len(sys.argv) > 1:
        server.run("streamable-http", port=int(sys.argv[1]))
    else:
        server.run("stdio")
