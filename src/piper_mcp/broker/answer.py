"""An API's answer as the model gets it: some headers, a text body within the limit, scrubbed."""

from __future__ import annotations

import httpcore
from pydantic import BaseModel

from piper_mcp.broker.scrub import CredentialScrubber

# What a caller needs to read an answer, page through it or back off; not cookies, not
# the server's software, nothing that sets state in the model's client.
_SHOWN_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-range",
        "content-language",
        "location",
        "retry-after",
        "date",
        "etag",
        "last-modified",
        "link",
        "allow",
        "www-authenticate",
        "x-request-id",
        "request-id",
    }
)
_SHOWN_PREFIXES = ("x-ratelimit-", "ratelimit-", "x-rate-limit-", "anthropic-ratelimit-")
_TEXT_TYPES = frozenset(
    {
        "",  # no content type: shown as text, scrubbed like any other
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/x-ndjson",
        "application/yaml",
        "application/graphql",
    }
)


class ApiResponse(BaseModel):
    """What the API answered, without the credential in any form."""

    status: int
    headers: dict[str, str]
    body: str | None  # None: binary or compressed, `note` says what and how big
    body_bytes: int  # bytes of body received, up to the rule's limit
    truncated: bool  # the body went on past the rule's max_response_bytes
    note: str | None = None  # what piper-mcp did not do or show


def _is_text(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def _header(response: httpcore.Response, name: bytes) -> str:
    return ", ".join(
        value.decode("latin-1") for key, value in response.headers if key.lower() == name
    )


def _shown_headers(response: httpcore.Response, scrubber: CredentialScrubber) -> dict[str, str]:
    shown: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        if scrubber.in_any_case(name):
            continue  # a name is never redacted: a header named after the key is left out
        if name in _SHOWN_HEADERS or name.startswith(_SHOWN_PREFIXES):
            value = scrubber.text(raw_value.decode("latin-1"))
            shown[name] = f"{shown[name]}, {value}" if name in shown else value
    return shown


async def _read(response: httpcore.Response, limit: int) -> tuple[bytes, int]:
    """The body's first `limit` bytes or more, and how many were received; reading stops
    at the first chunk past `limit`."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_stream():
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            break  # the rest stays unread; closing the response drops the connection
    return b"".join(chunks)[:limit], received


async def read_answer(
    response: httpcore.Response,
    *,
    limit: int,
    scrubber: CredentialScrubber,
    note: str | None = None,
) -> ApiResponse:
    """The answer in `response`: its body read up to `limit` bytes, the credential scrubbed.

    A little past the limit is read too, so that a credential the limit cuts in two is
    recognised whole and redacted, not shown in half.
    """
    data, received = await _read(response, limit + scrubber.reach)
    truncated = received > limit
    # Compared folded, said as sent: folding could hide a key from the scrubber.
    said_type = _header(response, b"content-type").partition(";")[0].strip()
    said_encoding = _header(response, b"content-encoding").strip()
    media_type, encoding = said_type.lower(), said_encoding.lower()
    notes = [note] if note else []
    body: str | None = None
    size = min(received, limit)
    if encoding not in ("", "identity"):
        notes.append(f"compressed body not shown ({said_encoding}, {size} bytes)")
    elif not _is_text(media_type):
        notes.append(f"binary body not shown ({said_type}, {size} bytes)")
    elif b"\x00" in data:
        # UTF-16 or UTF-32 read as UTF-8: a credential in it would be one replace() away.
        notes.append(f"body with NUL bytes not shown ({said_type}, {size} bytes)")
    else:
        text = data.decode("utf-8", errors="replace")
        end = len(data[:limit].decode("utf-8", errors="replace")) if truncated else len(text)
        body = scrubber.text_cut(text, end)
    return ApiResponse(
        status=response.status,
        headers=_shown_headers(response, scrubber),
        body=body,
        body_bytes=size,
        truncated=truncated,
        note=scrubber.text("; ".join(notes)) or None,
    )
