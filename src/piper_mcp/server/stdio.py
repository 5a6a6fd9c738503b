"""MCP over stdin and stdout: one JSON-RPC message a line, within bounds a host cannot break.

The SDK's `stdio_server` drops a line it cannot parse without an answer (the host waits
forever), holds a line of any size in memory, reads on while a host that stopped reading
leaves answers piling up, and ends in a traceback when stdout is closed. This transport
plugs into the same server loop with these guarantees instead:

- a line that is not JSON, or not a JSON-RPC message, is answered with the JSON-RPC error
  (`-32700` Parse error, `-32600` Invalid Request) carrying the request's id when one can
  be read, and logged in one line without its content;
- a line over `max_line_bytes` is skipped as it streams in, never held, and answered with
  `-32600` (its id cannot be read without holding it);
- while answers wait for a host that does not read stdout, stdin is not read either, so
  the host's writes block instead of the server's memory growing;
- a host that closes stdout ends the session quietly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    RequestId,
    jsonrpc_message_adapter,
)

logger = logging.getLogger(__name__)

CHUNK_BYTES = 65_536
# Answers the server may have waiting for stdout before it stops reading stdin. A few, so
# answers finishing together do not stall a host that reads; any more only costs memory.
MAX_UNWRITTEN_MESSAGES = 16
# At the end, how long the last answers may take to reach a host that is not reading.
FLUSH_SECONDS = 5.0


async def serve_stdio(server: MCPServer, max_line_bytes: int) -> None:
    """Serve `server` to the host on this process's stdin and stdout until stdin ends."""
    async with stdio_streams(max_line_bytes) as (read_stream, write_stream):
        # MCPServer has no public way to run over a transport's own streams (2.3): this is
        # what its `run_stdio_async` does with the SDK's transport.
        lowlevel = server._lowlevel_server
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@asynccontextmanager
async def stdio_streams(
    max_line_bytes: int,
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """The server loop's read and write streams, over this process's stdin and stdout."""
    with _claimed_stdio() as (wire_in, wire_out):
        wire = _Wire(max_line_bytes)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wire.read_messages)
            token = anyio.lowlevel.current_token()
            for job in (
                lambda: _read_chunks(wire_in, wire.chunks_in.send, token),
                lambda: _write_lines(wire_out, wire.next_line, wire.stdout_closed, token),
            ):
                threading.Thread(target=job, name="piper-mcp stdio", daemon=True).start()
            yield wire.incoming, wire.outgoing_in
            with anyio.move_on_after(FLUSH_SECONDS):
                await wire.flushed.wait()
            tasks.cancel_scope.cancel()


class _Wire:
    """The asynchronous half: bytes in to messages, messages out to lines."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.chunks_in, self.chunks = anyio.create_memory_object_stream[bytes](0)
        self.incoming_in, self.incoming = anyio.create_memory_object_stream[
            SessionMessage | Exception
        ](0)
        self.outgoing_in, self.outgoing = anyio.create_memory_object_stream[SessionMessage](0)
        self.replies = self.outgoing_in.clone()  # this transport's own error answers
        self.taken = anyio.Event()
        self.flushed = anyio.Event()
        self.reading = anyio.CancelScope()

    async def read_messages(self) -> None:
        """Hand on each line of stdin as a message, or answer it as unreadable, until EOF."""
        with self.reading:  # cancelled when stdout closes: the server then sees the end
            async with self.incoming_in, self.replies, self.chunks:
                await self._split_lines()

    async def _split_lines(self) -> None:
        line = bytearray()
        skipped = 0  # the size of an oversized line so far, dropped as it arrives
        async for chunk in self.chunks:
            if not chunk:
                break
            start = 0
            while start < len(chunk):
                end = chunk.find(b"\n", start)
                piece = chunk[start:] if end < 0 else chunk[start:end]
                if skipped or len(line) + len(piece) > self.max_line_bytes:
                    skipped += len(line) + len(piece)
                    line.clear()
                else:
                    line += piece
                if end < 0:
                    break
                start = end + 1
                await self._while_output_stalls()
                if skipped:
                    await self._refuse_oversized(skipped)
                    skipped = 0
                else:
                    await self._take_line(bytes(line))
                    line.clear()
        if line:  # a last line without its newline
            await self._take_line(bytes(line))

    async def _while_output_stalls(self) -> None:
        # Back-pressure: answers a host does not read would pile up here, one a request;
        # while too many wait, stdin is not read, and the host's own writes block.
        while self.outgoing_in.statistics().tasks_waiting_send >= MAX_UNWRITTEN_MESSAGES:
            await self.taken.wait()

    async def _take_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError:
            await self._refuse_unreadable(line)
            return
        if isinstance(message, JSONRPCNotification) and _has_id(line):
            # `"id": null` validates as a notification, which is never answered: the
            # sender, who gave an id, would wait forever.
            await self._refuse_unreadable(line)
            return
        await self.incoming_in.send(SessionMessage(message))

    async def _refuse_unreadable(self, line: bytes) -> None:
        try:
            pydantic_core.from_json(line)  # the parser the SDK reads messages with
        except ValueError:
            code, message = (
                PARSE_ERROR,
                "Parse error: the line is not JSON (UTF-8, no lone surrogates)",
            )
        else:
            code, message = INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message"
        document = _lenient_json(line)
        if (
            isinstance(document, dict)
            and "method" not in document
            and ("result" in document or "error" in document)
        ):
            # A broken answer to one of our requests: an error back could start a loop of
            # errors between two peers that both do this.
            _log_refusal("Ignored a malformed JSON-RPC response", len(line), document.get("id"))
            return
        request_id = _readable_id(document)
        _log_refusal(f"Answered {message.partition(':')[0]}", len(line), request_id)
        await self._reply(request_id, code, message)

    async def _refuse_oversized(self, size: int) -> None:
        _log_refusal(
            f"Answered Invalid Request: a message over {self.max_line_bytes} bytes",
            size,
            None,
        )
        await self._reply(
            None,
            INVALID_REQUEST,
            f"Invalid Request: a message over {self.max_line_bytes} bytes, piper-mcp's limit "
            "(PIPER_MCP_MAX_REQUEST_BYTES); it was skipped",
        )

    async def _reply(self, request_id: RequestId | None, code: int, message: str) -> None:
        error = JSONRPCError(
            jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message)
        )
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # stdout closed
            await self.replies.send(SessionMessage(error))

    async def next_line(self) -> bytes | None:
        """The next message to write, as a line; None once the server has no more."""
        self.taken.set()
        self.taken = anyio.Event()
        try:
            session_message = await self.outgoing.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.flushed.set()
            return None
        text = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
        return text.encode() + b"\n"

    def stdout_closed(self) -> None:
        logger.info("The host closed stdout; stopping.")
        # Answers still to come have nowhere to go: refuse them at once, stop reading, and
        # the server sees the end of its input.
        self.outgoing.close()
        self.flushed.set()
        self.reading.cancel()


def _read_chunks(
    fd: int,
    deliver: Callable[[bytes], Coroutine[Any, Any, None]],
    token: anyio.lowlevel.EventLoopToken,
) -> None:
    """In a daemon thread (one blocked in `read` never holds up the exit): stdin to `deliver`.

    `deliver` returns only once the chunk is taken, so a server that stops taking stops
    this thread reading, and the pipe fills up to the host.
    """
    while True:
        try:
            chunk = os.read(fd, CHUNK_BYTES)
        except OSError:
            chunk = b""
        try:
            anyio.from_thread.run(deliver, chunk, token=token)
        except Exception:  # the transport is gone
            return
        if not chunk:
            return


def _write_lines(
    fd: int,
    next_line: Callable[[], Coroutine[Any, Any, bytes | None]],
    closed: Callable[[], None],
    token: anyio.lowlevel.EventLoopToken,
) -> None:
    """In a daemon thread: each message to stdout, a blocking write at a time.

    It takes the next message only after the last one is written, so while a host does not
    read, answers wait in the server loop where the reader can count them.
    """
    while True:
        try:
            line = anyio.from_thread.run(next_line, token=token)
        except Exception:
            return
        if line is None:
            return
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            try:
                anyio.from_thread.run_sync(closed, token=token)
            except Exception:
                return
            return


@contextmanager
def _claimed_stdio() -> Iterator[tuple[int, int]]:
    """Private copies of stdin and stdout for the wire.

    While serving, fd 0 reads nothing and fd 1 writes to stderr, so a library or a child
    process that reads or prints cannot take the host's bytes or corrupt the protocol.
    """
    sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    os.dup2(2, 1)
    try:
        yield wire_in, wire_out
    finally:
        sys.stdout.flush()  # stray output still buffered belongs on stderr, not the wire
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
        # The copies stay open: a daemon thread may still be blocked on one of them, and a
        # closed descriptor number could be reused under it.


def _lenient_json(line: bytes) -> object:
    """The line as JSON, forgiving bad UTF-8 and lone surrogates; None if not JSON at all."""
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None


def _readable_id(document: object) -> RequestId | None:
    """The id a JSON-RPC error may echo: an integer or a string that is valid UTF-8."""
    if not isinstance(document, dict):
        return None
    value = document.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return None
        return value
    return None


def _log_refusal(what: str, size: int, request_id: object) -> None:
    # The host's own bytes are never logged: only the size, and the id, escaped and short.
    shown = "none" if request_id is None else repr(request_id)[:40]
    logger.warning("%s on stdin (%d bytes, id %s).", what, size, shown)


def _has_id(line: bytes) -> bool:
    document = _lenient_json(line)
    return isinstance(document, dict) and "id" in document
