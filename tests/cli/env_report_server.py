"""A tiny MCP server that says how it was started, and never a value it was given.

Its one tool, `environment`, answers the NAMES of the environment variables the server
received, the sha256 of the values it is asked about, its process id, and what each of
its open file descriptors points to: what a test needs to check `piper-mcp exec`
without a secret in any output.

    python tests/cli/env_report_server.py              # MCP over stdio
    python tests/cli/env_report_server.py PORT_FILE    # streamable HTTP on 127.0.0.1

Over HTTP it takes a free port itself and then writes its number to PORT_FILE: a port
picked by the test and bound later could be taken meanwhile by another test's server.
"""

from __future__ import annotations

import hashlib
import os
import socket
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


def serve_http(port_file: Path) -> None:
    import uvicorn  # only here: the stdio server starts as it did (bench/exec_startup.py)

    listening = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    written = port_file.with_suffix(".partial")
    written.write_text(str(listening.getsockname()[1]))
    written.replace(port_file)  # whole, or not there yet
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        serve_http(Path(sys.argv[1]))
    else:
        server.run("stdio")
