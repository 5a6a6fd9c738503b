"""`piper-mcp serve`: build the Piper client and the MCP server, then serve one transport.

In stdio mode nothing but protocol goes to stdout; logs go to stderr. Over HTTP, a first
SIGTERM or SIGINT lets the calls in flight finish (`PIPER_MCP_SHUTDOWN_GRACE_SECONDS`)
before the server stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, INTERNAL_ERROR

from piper_mcp.invocation import command, inspector_command
from piper_mcp.network import is_loopback_host
from piper_mcp.piper import AsyncPiperClient, PiperConfigError, load_settings
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.brokered_calls import BrokeredCalls
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.policy import RevealPolicy
from piper_mcp.server.redaction import Redactor
from piper_mcp.server.repeated_warnings import RepeatedWarnings
from piper_mcp.server.settings import ServeSettings

if TYPE_CHECKING:
    from pathlib import Path

    import uvicorn

    from piper_mcp.server.local_piper import LocalPiper

logger = logging.getLogger("piper_mcp")
# After the last call of a drain: its answer leaves a moment after its handler returns, and
# stopping ends the streams answers travel on.
ANSWER_SETTLE_SECONDS = 0.2
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
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatedWarnings())
    # uvicorn and the SDK are chatty at INFO; their warnings still show.
    for noisy in ("uvicorn.access", "httpx", "httpx2", "mcp.server.lowlevel.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # These print whole messages and stream chunks (secret values, escaped) at DEBUG:
    # quiet at any level, since no redactor can know every way a value is escaped.
    for body_logger in MESSAGE_BODY_LOGGERS:
        logging.getLogger(body_logger).setLevel(logging.WARNING)


def build_service(options: ServeSettings, stack: ExitStack) -> CredentialService:
    """The service `options` describe, its local vault (`--local`) open and checked."""
    service, local = _service(options, stack)
    if local is not None:
        local.open()
    return service


def _service(
    options: ServeSettings, stack: ExitStack
) -> tuple[CredentialService, LocalPiper | None]:
    """The service, and with `--local` its backend, whose vault is not opened yet."""
    local = None
    if options.local:
        from piper_mcp.server.local_piper import LocalPiper

        local = LocalPiper(options.agent)
        stack.callback(local.stop)
        settings, http_client = local.settings, local.http_client()
        declared = local.declared
    else:
        settings, http_client = load_settings(), None
        fixed = list(options.variables)
        declared = lambda: fixed  # noqa: E731
    client = AsyncPiperClient.from_settings(settings, http_client=http_client)
    service = CredentialService(
        client,
        declared,
        policy=RevealPolicy(options.reveal, options.reveal_overrides),
        grants=local.grants if local else None,
    )
    return service, local


def serve(options: ServeSettings) -> int:
    configure_logging(options.log_level)
    redactor = Redactor()
    redactor.install()
    if options.http_token is not None:
        redactor.remember(options.http_token.get_secret_value(), pinned=True)
    if options.transport != "stdio":
        check_http_exposure(options)
    else:
        check_stdio_open()
    if options.reveal == "allow" or "allow" in options.reveal_overrides.values():
        logger.warning(
            "Reveal policy allows raw secret values to reach the model without asking "
            "(PIPER_MCP_REVEAL=%s, overrides: %s).",
            options.reveal,
            {name: rule for name, rule in options.reveal_overrides.items() if rule == "allow"},
        )
    with ExitStack() as stack:
        service, local = _service(options, stack)
        audit = AuditTrail(options.audit_path(), max_bytes=options.audit_max_bytes)
        calls = BrokeredCalls(
            service, options.api_rules, stored_rule=local.stored_rule if local else None
        )
        server = build_server(
            service,
            calls=calls,
            audit=audit,
            transport=options.transport,
            redactor=redactor,
            grant_wait=options.grant_wait_seconds,
            # The grant link goes to the client: only to one that is the user's.
            offer_grants=options.transport == "stdio" or options.http_token is not None,
        )
        # What start-up built stays: collections need not walk it (see cli.main).
        gc.freeze()
        gc.enable()
        if local is None:
            problem = service.configuration_problem()
            if problem:
                logger.warning("%s", problem)
        else:
            # `initialize` needs no vault: it is answered while the vault opens.
            server.middleware.append(VaultGate(local))
        if options.transport == "stdio":
            if local is not None:
                local.open_in_background()
            anyio.run(run_stdio, server, options.max_request_bytes, local)
        else:
            serve_http(server, options, local)
        failure = local.failure() if local else None  # waits for the vault, if still opening
        if failure is not None:
            raise failure
    return 0


class VaultGate:
    """MCP middleware: requests other than `initialize` and `ping` wait for the local vault."""

    def __init__(self, local: LocalPiper) -> None:
        self.local = local

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is not None and ctx.method not in ("initialize", "ping"):
            try:
                await self.local.ready()
            except Exception:
                raise MCPError(
                    INTERNAL_ERROR,
                    f"piper-mcp could not open its local vault in {self.local.home} and is "
                    "stopping; its stderr says why.",
                ) from None
        return await call_next(ctx)


async def until_vault_fails(
    local: LocalPiper | None, stop: Callable[[], None], attended: bool
) -> None:
    """Once the vault is open, say that the server serves; if it cannot open, `stop()`.

    `attended`: stdin is a terminal, so a person reads stderr: say what to do instead.
    """
    if local is not None:
        try:
            await local.ready()
        except Exception:
            stop()
            return
    logger.info("Serving MCP over stdio.")
    if attended:
        print(terminal_hint(local.home if local else None), file=sys.stderr, flush=True)


def terminal_hint(home: Path | None) -> str:
    """Said once when a person, not a host, started the server in a terminal."""
    return (
        "piper-mcp: this is an MCP server: it waits for an MCP host (Claude Desktop, Claude "
        "Code, Cursor, the MCP Inspector) to talk JSON-RPC on stdin, so typing here does "
        "nothing useful. Let a host start it instead (README: Connecting a host; mcp.json "
        f"holds ready entries), or try it with `{inspector_command(home)}`. Ctrl-C or "
        f"Ctrl-D stops it; `{command('demo')}` shows the whole flow without a host."
    )


def check_stdio_open() -> None:
    """A host gives stdio pipes; refuse to start (and make no vault) if one is closed."""
    for fd, name in ((0, "stdin"), (1, "stdout")):
        try:
            os.fstat(fd)
        except OSError:
            raise PiperConfigError(
                f"{name} is closed, and MCP over stdio speaks on stdin and stdout.",
                advice="Let an MCP host start piper-mcp (it gives it pipes), or serve HTTP "
                "with --transport streamable-http.",
            ) from None


async def run_stdio(server: MCPServer, max_request_bytes: int, local: LocalPiper | None) -> None:
    """Serve over stdin and stdout until stdin ends or SIGTERM comes, or the vault fails."""
    from piper_mcp.server.stdio import serve_stdio

    async with anyio.create_task_group() as tasks:
        # Asked now: serving puts /dev/null on fd 0 (see stdio._claimed_stdio).
        attended = os.isatty(0)
        tasks.start_soon(until_vault_fails, local, tasks.cancel_scope.cancel, attended)
        async with anyio.create_task_group() as serving:
            if sys.platform != "win32":  # no signal handlers in an asyncio loop there
                serving.start_soon(until_terminated, serving.cancel_scope.cancel)
            await serve_stdio(server, max_request_bytes)
            serving.cancel_scope.cancel()


async def until_terminated(stop: Callable[[], None]) -> None:
    """At SIGTERM (a host stopping its server) or SIGINT (Ctrl-C), `stop()`.

    Both are taken here, not left to asyncio: its SIGINT handling cancels the main task
    once, and what closes the streams afterwards would then wait for a host that is not
    reading. `stop()` cancels the whole serving scope, so closing takes no time.
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("Stopping: %s.", signal.Signals(signum).name)
            stop()
            return


def check_http_exposure(options: ServeSettings) -> None:
    """Beyond loopback, HTTP needs a bearer token: refuse to start without one."""
    if not is_loopback_host(options.host) and options.http_token is None:
        raise PiperConfigError(
            f"Refusing to serve MCP on {options.host}, beyond this machine, without a bearer "
            "token.",
            advice="Give a token of 32 characters or more with --auth-token-file "
            "(PIPER_MCP_HTTP_TOKEN_FILE) or PIPER_MCP_HTTP_TOKEN, or bind 127.0.0.1.",
        )


def serve_http(server: MCPServer, options: ServeSettings, local: LocalPiper | None) -> None:
    import uvicorn

    from piper_mcp.network import ListenError, bind, url_of
    from piper_mcp.server.http_guard import BearerGuard, SessionLimit, transport_security

    try:
        sock = bind(options.host, options.port)
    except ListenError as error:
        raise PiperConfigError(
            f"{error}.",
            advice="Choose another port with --port (PIPER_MCP_PORT); `--port 0` takes any "
            "free one and prints the URL.",
        ) from None
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
        app,
        options.max_sessions,
        stream_path="/sse" if options.transport == "sse" else None,
        idle_seconds=options.session_idle_seconds,
        max_body_bytes=options.max_request_bytes,
    )
    token = options.http_token.get_secret_value() if options.http_token else None
    guarded = BearerGuard(limited, token)
    calls = CallsInFlight()
    server.middleware.append(calls)
    logger.info("Serving MCP over %s at %s%s", options.transport, base, path)
    print(f"piper-mcp: serving MCP at {base}{path}", file=sys.stderr, flush=True)
    # log_config=None: uvicorn logs through the root handlers, and so through the redactor.
    # Once the calls are drained, only streams are left open, and the SSE library ends them
    # within half a second: the short bound is for anything else.
    # The access log, a line a request (INFO to uvicorn), only at DEBUG: below that it is
    # noise to a host, and time on every call.
    config = uvicorn.Config(
        guarded,
        log_level=options.log_level.lower(),
        log_config=None,
        access_log=options.log_level == "DEBUG",
        timeout_graceful_shutdown=1,
    )
    if local is not None:  # once the port is ours: a busy port creates no vault
        local.open_in_background()
    draining_server(config, calls, options.shutdown_grace_seconds, local).run(sockets=[sock])


class CallsInFlight:
    """MCP middleware: the requests being answered, on every session and transport.

    Once the server is stopping it refuses new requests (a JSON-RPC error that says so),
    while answers to the server's own requests (a user's consent) still get through; a
    call still running when the grace is over gets an error too, not a cut answer.
    """

    def __init__(self) -> None:
        self.running: set[anyio.CancelScope] = set()
        self.stopping = False
        self._none_left = asyncio.Event()

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None:  # a notification
            return await call_next(ctx)
        if self.stopping:
            raise MCPError(
                CONNECTION_CLOSED,
                "piper-mcp is shutting down and takes no new requests; connect again once it "
                "has restarted.",
            )
        with anyio.CancelScope() as call:
            self.running.add(call)
            try:
                return await call_next(ctx)
            finally:
                self.running.discard(call)
                if not self.running:
                    self._none_left.set()
        raise MCPError(
            CONNECTION_CLOSED,
            "piper-mcp stopped before this call finished (PIPER_MCP_SHUTDOWN_GRACE_SECONDS); "
            "call again once it has restarted.",
        )

    async def drain(self, grace: float) -> int:
        """Refuse new requests, wait up to `grace` seconds for these, stop the rest: how many."""
        self.stopping = True
        if not self.running:
            return 0
        self._none_left.clear()
        try:
            await asyncio.wait_for(self._none_left.wait(), grace)
        except TimeoutError:
            for call in self.running:
                call.cancel()
            return len(self.running)
        finally:
            await asyncio.sleep(ANSWER_SETTLE_SECONDS)
        return 0


def draining_server(
    config: uvicorn.Config, calls: CallsInFlight, grace: float, local: LocalPiper | None = None
) -> uvicorn.Server:
    """A uvicorn server whose first SIGTERM or SIGINT drains `calls` before its shutdown.

    uvicorn alone ends every open SSE stream at a signal, and the answer to a streamable
    HTTP call is one: the call is cut mid-answer. Instead, the server keeps serving while
    it refuses new requests and waits for the calls in flight, for `grace` seconds at
    most; then uvicorn shuts down. A second signal stops it at once. It also stops if
    the `local` vault cannot be opened.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        signalled = False
        draining: asyncio.Task[None] | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            if local is None:
                return await super().serve(sockets)
            watch = asyncio.get_running_loop().create_task(self._watch(local))
            try:
                await super().serve(sockets)
            finally:
                watch.cancel()

        async def _watch(self, local: LocalPiper) -> None:
            try:
                await local.ready()
            except Exception:
                self.should_exit = True

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.signalled or self.should_exit:
                super().handle_exit(sig, frame)
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not serving yet
                super().handle_exit(sig, frame)
                return
            self.signalled = True
            # This runs in a signal handler: start the drain from the loop, not from here.
            loop.call_soon_threadsafe(self._start_draining)

        def _start_draining(self) -> None:
            self.draining = asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            if calls.running:
                logger.info(
                    "Stopping: refusing new requests, finishing %d call(s) in flight "
                    "(at most %g s, PIPER_MCP_SHUTDOWN_GRACE_SECONDS).",
                    len(calls.running),
                    grace,
                )
            stopped = await calls.drain(grace)
            if stopped:
                logger.warning(
                    "Stopped %d call(s) still running after %g s "
                    "(PIPER_MCP_SHUTDOWN_GRACE_SECONDS); their clients got an error.",
                    stopped,
                    grace,
                )
            self.should_exit = True

    return DrainingServer(config)
