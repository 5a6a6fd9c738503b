"""`piper-mcp serve`: build the Piper client and the MCP server, then serve one transport.

In stdio mode nothing but protocol goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack

from mcp.server.mcpserver import MCPServer

from piper_mcp.piper import AsyncPiperClient, load_settings
from piper_mcp.server.app import build_server
from piper_mcp.server.desk import CredentialDesk
from piper_mcp.server.settings import ServeSettings

logger = logging.getLogger("piper_mcp")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # uvicorn and the SDK are chatty at INFO; their warnings still show.
    for noisy in ("uvicorn.access", "httpx", "mcp.server.lowlevel.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def build_desk(options: ServeSettings, stack: ExitStack) -> CredentialDesk:
    if options.local:
        from piper_mcp.server.local_piper import start_local_piper

        local = start_local_piper(options.agent)
        stack.callback(local.stop)
        client = AsyncPiperClient.from_settings(local.settings)
        return CredentialDesk(client, local.declared, how_to_declare=local.how_to_declare)
    declared = list(options.variables)
    client = AsyncPiperClient.from_settings(load_settings())
    return CredentialDesk(
        client,
        lambda: declared,
        how_to_declare="Add it to PIPER_VARIABLES (comma-separated) in the server's "
        "configuration and restart it.",
    )


def serve(options: ServeSettings) -> int:
    configure_logging(options.log_level)
    with ExitStack() as stack:
        desk = build_desk(options, stack)
        server = build_server(desk)
        if not desk.declared:
            logger.warning("No variables are declared yet. %s", desk.how_to_declare)
        if options.transport == "stdio":
            logger.info("Serving MCP over stdio.")
            server.run("stdio")
            return 0
        serve_http(server, options)
    return 0


def serve_http(server: MCPServer, options: ServeSettings) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from piper_mcp.local.server import bind, url_of

    sock = bind(options.host, options.port)
    base = url_of(sock)
    _, port = sock.getsockname()[:2]
    allowed_hosts = [f"{options.host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=[f"http://{host}" for host in allowed_hosts],
    )
    if options.transport == "sse":
        app = server.sse_app(transport_security=security, host=options.host)
        path = "/sse"
    else:
        app = server.streamable_http_app(transport_security=security, host=options.host)
        path = "/mcp"
    logger.info("Serving MCP over %s at %s%s", options.transport, base, path)
    print(f"piper-mcp: serving MCP at {base}{path}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=options.log_level.lower(), lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
