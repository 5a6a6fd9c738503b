"""`piper-mcp serve`: build the Piper client and the MCP server, then serve one transport.

In stdio mode nothing but protocol goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack

from mcp.server.mcpserver import MCPServer

from piper_mcp.piper import AsyncPiperClient, PiperConfigError, load_settings
from piper_mcp.piper.settings import is_loopback_host
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.desk import CredentialDesk
from piper_mcp.server.http_guard import BearerGuard, SessionLimit, transport_security
from piper_mcp.server.policy import RevealPolicy
from piper_mcp.server.redaction import Redactor
from piper_mcp.server.settings import ServeSettings

logger = logging.getLogger("piper_mcp")
MESSAGE_BODY_LOGGERS = (
    "mcp.server.sse",
    "mcp.server.streamable_http",
    "mcp.server._streamable_http_modern",
    "mcp.server.runner",
    "mcp.shared.jsonrpc_dispatcher",
    "mcp.client",
    "sse_starlette",
    "httpcore",
    "httpcore2",
    "hpack",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # uvicorn and the SDK are chatty at INFO; their warnings still show.
    for noisy in ("uvicorn.access", "httpx", "httpx2", "mcp.server.lowlevel.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # These print whole messages and stream chunks (secret values, escaped) at DEBUG:
    # quiet at any level, since no redactor can know every way a value is escaped.
    for body_logger in MESSAGE_BODY_LOGGERS:
        logging.getLogger(body_logger).setLevel(logging.WARNING)


def build_desk(options: ServeSettings, stack: ExitStack) -> CredentialDesk:
    if options.local:
        from piper_mcp.server.local_piper import start_local_piper

        local = start_local_piper(options.agent)
        stack.callback(local.stop)
        settings, http_client = local.settings, local.http_client
        declared, how_to_declare = local.declared, local.how_to_declare
    else:
        settings, http_client = load_settings(), None
        fixed = list(options.variables)
        declared = lambda: fixed  # noqa: E731
        how_to_declare = (
            "Add it to PIPER_VARIABLES (comma-separated) in the server's configuration and "
            "restart it."
        )
    client = AsyncPiperClient.from_settings(settings, http_client=http_client)
    return CredentialDesk(
        client,
        declared,
        how_to_declare=how_to_declare,
        policy=RevealPolicy(options.reveal, options.reveal_overrides),
    )


def serve(options: ServeSettings) -> int:
    configure_logging(options.log_level)
    redactor = Redactor()
    redactor.install()
    if options.http_token is not None:
        redactor.remember(options.http_token.get_secret_value())
    if options.transport != "stdio":
        check_http_exposure(options)
    if options.reveal == "allow" or "allow" in options.reveal_overrides.values():
        logger.warning(
            "Reveal policy allows raw secret values to reach the model without asking "
            "(PIPER_MCP_REVEAL=%s, overrides: %s).",
            options.reveal,
            {name: rule for name, rule in options.reveal_overrides.items() if rule == "allow"},
        )
    with ExitStack() as stack:
        desk = build_desk(options, stack)
        audit = AuditTrail(options.audit_path(), max_bytes=options.audit_max_bytes)
        server = build_server(desk, audit=audit, transport=options.transport, redactor=redactor)
        if not desk.declared:
            logger.warning("No variables are declared yet. %s", desk.how_to_declare)
        if options.transport == "stdio":
            logger.info("Serving MCP over stdio.")
            server.run("stdio")
            return 0
        serve_http(server, options)
    return 0


def check_http_exposure(options: ServeSettings) -> None:
    """Beyond loopback, HTTP needs a bearer token: refuse to start without one."""
    if not is_loopback_host(options.host) and options.http_token is None:
        raise PiperConfigError(
            f"Refusing to serve MCP on {options.host}, beyond this machine, without a bearer "
            "token.",
            advice="Give a token of 32 characters or more with --auth-token-file "
            "(PIPER_MCP_HTTP_TOKEN_FILE) or PIPER_MCP_HTTP_TOKEN, or bind 127.0.0.1.",
        )


def serve_http(server: MCPServer, options: ServeSettings) -> None:
    import uvicorn

    from piper_mcp.local.server import bind, url_of

    sock = bind(options.host, options.port)
    base = url_of(sock)
    port = sock.getsockname()[1]
    security = transport_security(options.host, port, options.allowed_hosts)
    if options.transport == "sse":
        app = server.sse_app(
            transport_security=security,
            host=options.host,
            max_request_body_size=options.max_request_bytes,
        )
        path = "/sse"
    else:
        app = server.streamable_http_app(
            transport_security=security,
            host=options.host,
            max_request_body_size=options.max_request_bytes,
            session_idle_timeout=options.session_idle_seconds,
            max_sessions=options.max_sessions,
        )
        path = "/mcp"
    limited = SessionLimit(
        app, options.max_sessions, stream_path="/sse" if options.transport == "sse" else None
    )
    token = options.http_token.get_secret_value() if options.http_token else None
    guarded = BearerGuard(limited, token)
    logger.info("Serving MCP over %s at %s%s", options.transport, base, path)
    print(f"piper-mcp: serving MCP at {base}{path}", file=sys.stderr, flush=True)
    # log_config=None: uvicorn logs through the root handlers, and so through the redactor.
    config = uvicorn.Config(guarded, log_level=options.log_level.lower(), log_config=None)
    uvicorn.Server(config).run(sockets=[sock])
