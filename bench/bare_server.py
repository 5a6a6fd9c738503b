"""The floor piper-mcp is measured against: a bare MCPServer with one trivial tool.

    python bench/bare_server.py                    # stdio
    python bench/bare_server.py streamable-http    # on a free loopback port, URL on stderr

Over HTTP it is served as `piper-mcp serve --transport streamable-http --port 0` serves:
uvicorn on a socket bound first, the URL printed on stderr once it is known.
"""

import socket
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="bare")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


def serve_http() -> None:
    import uvicorn

    # As piper-mcp binds (piper_mcp.network.bind): naming TCP lets asyncio set TCP_NODELAY.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    print(f"bare: serving MCP at http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", log_config=None)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["streamable-http"]:
        serve_http()
    else:
        server.run("stdio")
