"""The logging backstop: scrub every secret and token this process has handled.

Redaction is not the design (nothing should log a secret in the first place);
it keeps a mistake elsewhere from leaking. Each remembered secret is also
scrubbed in its base64, URL-encoded, JSON-escaped (once and twice) and Python
repr forms, since a value with a quote, a backslash, a newline or non-ASCII
reaches a log line escaped; bearer material and credentials in query strings
always are, in messages, arguments, exception texts and stack traces.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    import logging

    from piper_mcp.piper import AsyncPiperClient

REDACTED = "[redacted]"
MIN_LENGTH = 6  # shorter strings would scrub ordinary words
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_QUERY_CREDENTIAL = re.compile(
    r"(?i)([?&](?:token|access_token|auth|authorization|api_key|key|client_secret)=)[^&\s\"'#]+"
)
_AUTHORIZATION = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b|\[redacted\])[^\s\"',;]+"
)


def escaped(secret: str) -> set[str]:
    """How `secret` appears inside JSON text (once and twice escaped) and Python reprs."""
    once = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    twice = {json.dumps(form)[1:-1] for form in once}
    reprs = {repr(secret)[1:-1], repr(secret.encode())[2:-1]}
    return once | twice | reprs


def encodings(secret: str) -> set[str]:
    raw = secret.encode()
    forms = escaped(secret) | {
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Redactor:
    """A logging filter; `remember(secret)` adds a value to scrub from then on.

    A filter by its `filter(record)` method, as logging takes any; not a `logging.Filter`,
    so that `exec`, which scrubs its one line of stderr, never imports logging.

    It keeps the `RECENT` secrets reported most recently (the client reports its values
    and cached tokens on every use) and the pinned ones (the client secret, the HTTP
    token): a client that never reuses STS tokens hands out a new one per call, and
    scrubbing every token since start would make each call slower than the last.
    """

    RECENT = 128

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[bool, set[str]]] = OrderedDict()
        self._forms: list[str] = []

    def remember(self, secret: str, *, pinned: bool = False) -> None:
        if len(secret) < MIN_LENGTH:
            return
        with self._lock:
            if secret in self._kept:  # seen: only its place in the queue changes
                self._kept.move_to_end(secret)
                return
            self._kept[secret] = (pinned, encodings(secret))
            if len(self._kept) > self.RECENT + sum(kept for kept, _ in self._kept.values()):
                oldest = next(known for known, (kept, _) in self._kept.items() if not kept)
                del self._kept[oldest]
            forms = set().union(*(forms for _, forms in self._kept.values()))
            self._forms = sorted(forms, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        text = _BEARER.sub(lambda match: match.group(1) + REDACTED, text)
        text = _QUERY_CREDENTIAL.sub(lambda match: match.group(1) + REDACTED, text)
        return _AUTHORIZATION.sub(lambda match: match.group(1) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:  # as logging.Formatter would write it
            from traceback import format_exception

            record.exc_text = "".join(format_exception(*record.exc_info)).removesuffix("\n")
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True

    def watch(self, client: AsyncPiperClient) -> None:
        """Learn every value, token and client secret `client` handles, from now on."""
        client.on_sensitive = self.remember
        if client.settings.client_secret is not None:
            self.remember(client.settings.client_secret.get_secret_value(), pinned=True)

    def install(self) -> None:
        """Attach to every handler in the process: the root's and any logger's own."""
        import logging

        loggers = [logging.getLogger()] + [
            logger
            for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ]
        for logger in loggers:
            for handler in logger.handlers:
                if self not in handler.filters:
                    handler.addFilter(self)
