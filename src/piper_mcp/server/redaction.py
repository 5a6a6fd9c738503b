"""The logging backstop: scrub every secret and token this process has handled.

Redaction is not the design (nothing should log a secret in the first place);
it keeps a mistake elsewhere from leaking. Each remembered secret is also
scrubbed in its base64 and URL-encoded forms, and bearer material always is,
in messages, arguments, exception texts and stack traces.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_LENGTH = 6  # shorter strings would scrub ordinary words
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_AUTHORIZATION = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b|\[redacted\])[^\s\"',;]+"
)


def encodings(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Redactor(logging.Filter):
    """A logging filter; `remember(secret)` adds a value to scrub from then on."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._forms: list[str] = []
        self._formatter = logging.Formatter()

    def remember(self, secret: str) -> None:
        if len(secret) < MIN_LENGTH:
            return
        with self._lock:
            known = set(self._forms)
            self._forms = sorted(known | encodings(secret), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        text = _BEARER.sub(lambda match: match.group(1) + REDACTED, text)
        return _AUTHORIZATION.sub(lambda match: match.group(1) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True

    def install(self) -> None:
        """Attach to every handler of the root logger (where all records end up)."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)
