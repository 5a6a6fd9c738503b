"""The logging backstop scrubs remembered secrets in every encoding, and bearer material."""

from __future__ import annotations

import base64
import logging
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
