"""The logging backstop scrubs remembered secrets in every encoding, and bearer material."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any
from urllib.parse import quote

import pytest

from piper_mcp.server.redaction import REDACTED, Redactor

SECRET = "sk-canary/with+odd=chars"


@pytest.fixture
def captured() -> tuple[logging.Logger, list[str], Redactor]:
    redactor = Redactor()
    redactor.remember(SECRET)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(redactor)
    logger = logging.getLogger("redaction-test")
    logger.handlers = [handler]
    logger.propagate = False
    return logger, lines, redactor


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        quote(SECRET, safe=""),
    ],
)
def test_every_form_of_a_remembered_secret_is_scrubbed(
    captured: tuple[logging.Logger, list[str], Redactor], form: str
) -> None:
    logger, lines, _ = captured
    logger.warning("value=%s in args", form)
    logger.warning(f"value={form} in the message")
    assert all(form not in line and REDACTED in line for line in lines)


def test_exception_texts_and_tracebacks_are_scrubbed(
    captured: tuple[logging.Logger, list[str], Redactor],
) -> None:
    logger, lines, _ = captured
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        logger.exception("failed")
    assert "ValueError: bad secret [redacted]" in lines[0]
    assert SECRET not in lines[0]


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer eyJ.secret.part",
        "headers={'authorization': 'Bearer abc.def'}",
        "sent bearer piper-sts-XYZ123 to /v1",
    ],
)
def test_bearer_material_is_scrubbed_even_if_never_remembered(
    captured: tuple[logging.Logger, list[str], Redactor], text: str
) -> None:
    logger, lines, _ = captured
    logger.info(text)
    logger.warning(text)
    assert not any(part in lines[-1] for part in ("eyJ.secret.part", "abc.def", "XYZ123"))


def test_short_strings_are_not_remembered(
    captured: tuple[logging.Logger, list[str], Redactor],
) -> None:
    logger, lines, redactor = captured
    redactor.remember("ok")
    logger.warning("ok, nothing to hide")
    assert lines == ["ok, nothing to hide"]


PEM_LIKE = '-----BEGIN KEY-----\nMII"quoted"\\back\u00e9\u043a\u043b\u044e\u0447-9f1c'


@pytest.mark.parametrize(
    "render",
    [
        lambda v: json.dumps({"value": v}),  # a JSON-RPC message
        lambda v: json.dumps({"value": v}, ensure_ascii=False),
        lambda v: json.dumps({"text": json.dumps({"value": v})}),  # a tool result's text block
        lambda v: repr({"value": v}),  # a pydantic or dict repr in a debug line
        lambda v: repr(v.encode()),  # a bytes chunk from the stream
    ],
    ids=["json", "json-unicode", "nested-json", "repr", "bytes-repr"],
)
def test_escaped_forms_of_a_remembered_value_are_scrubbed(
    captured: tuple[logging.Logger, list[str], Redactor], render: Any
) -> None:
    """Issue 9.3: values with quotes, backslashes, newlines or non-ASCII reach logs escaped."""
    logger, lines, redactor = captured
    redactor.remember(PEM_LIKE)
    logger.warning("sending %s", render(PEM_LIKE))
    assert "MII" not in lines[-1] and "[redacted]" in lines[-1]


def test_credentials_in_a_query_string_are_scrubbed(
    captured: tuple[logging.Logger, list[str], Redactor],
) -> None:
    """Issue 9.4: an access log printed a rejected request's query-string token."""
    logger, lines, _ = captured
    logger.warning('"GET /mcp?access_token=tok-never-seen-1234&x=1 HTTP/1.1" 400')
    assert "tok-never-seen-1234" not in lines[-1] and "x=1" in lines[-1]


def test_handlers_of_non_propagating_loggers_get_the_redactor_too() -> None:
    """Issue 9.4: uvicorn-style loggers with their own handlers go through it as well."""
    own = logging.getLogger("test.own-handler")
    own.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    own.addHandler(handler)
    redactor = Redactor()
    redactor.remember("a-secret-value-42")
    try:
        redactor.install()
        own.warning("leaking a-secret-value-42")
        assert handler.stream.getvalue() == "leaking [redacted]\n"  # type: ignore[attr-defined]
    finally:
        own.removeHandler(handler)


def test_it_keeps_the_recent_and_pinned_secrets_not_every_token_since_start() -> None:
    # A client that never reuses STS tokens reports a new one per call: remembering all
    # of them made each call slower than the last (found by bench/soak.py).
    redactor = Redactor()
    redactor.remember("the-http-bearer-token", pinned=True)
    redactor.remember("a-value-used-all-along")
    for n in range(5 * Redactor.RECENT):
        redactor.remember(f"sts-token-number-{n:05d}")
        redactor.remember("a-value-used-all-along")  # reported on every use
    text = (
        "the-http-bearer-token a-value-used-all-along sts-token-number-00000 "
        f"sts-token-number-{5 * Redactor.RECENT - 1:05d}"
    )
    assert redactor.scrub(text) == f"{REDACTED} {REDACTED} sts-token-number-00000 {REDACTED}"
