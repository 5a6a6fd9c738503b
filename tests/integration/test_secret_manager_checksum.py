"""The Secret Manager read checks the payload's CRC32C (`dataCrc32c`) when Google gives one.

A scripted Secret Manager on loopback answers the one GET the read makes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from piper_mcp.checksum import crc32c
from piper_mcp.piper import PiperError
from piper_mcp.piper.retry import RetryPolicy
from piper_mcp.piper.secret_manager import read_with_token

pytestmark = pytest.mark.anyio

VALUE = 'sk-checksum-canary-"é"'
NAME = "projects/p/secrets/s/versions/latest"
DATA = VALUE.encode()


def secret_manager(payload: dict[str, object]) -> Starlette:
    async def access(request: Request) -> JSONResponse:
        return JSONResponse({"name": NAME, "payload": payload})

    return Starlette(routes=[Route(f"/v1/{NAME}:access", access)])


async def read(endpoint: str) -> str:
    async with httpx.AsyncClient() as http:
        return await read_with_token(
            http, NAME, "sts-token", endpoint=endpoint, attempt_timeout=5, retry=RetryPolicy()
        )


@pytest.mark.parametrize(
    "checksum", [str(crc32c(DATA)), crc32c(DATA), None], ids=["string", "number", "absent"]
)
async def test_a_payload_that_matches_its_checksum_or_has_none_is_read(
    serve: Callable[[object], str], checksum: object
) -> None:
    payload: dict[str, object] = {"data": base64.b64encode(DATA).decode()}
    if checksum is not None:
        payload["dataCrc32c"] = checksum
    assert await read(serve(secret_manager(payload))) == VALUE


async def test_a_payload_damaged_on_the_way_is_an_error_that_shows_nothing_of_it(
    serve: Callable[[object], str],
) -> None:
    damaged = DATA.replace(b"canary", b"canarY")
    payload = {"data": base64.b64encode(damaged).decode(), "dataCrc32c": str(crc32c(DATA))}
    with pytest.raises(PiperError, match="does not match its checksum") as caught:
        await read(serve(secret_manager(payload)))
    assert "canar" not in str(caught.value)


async def test_damage_that_leaves_no_utf_8_is_still_said_to_be_damage(
    serve: Callable[[object], str],
) -> None:
    damaged = b"\xff" + DATA[1:]
    payload = {"data": base64.b64encode(damaged).decode(), "dataCrc32c": str(crc32c(DATA))}
    with pytest.raises(PiperError, match="does not match its checksum"):
        await read(serve(secret_manager(payload)))


async def test_a_checksum_that_is_not_a_number_is_not_a_payload(
    serve: Callable[[object], str],
) -> None:
    payload = {"data": base64.b64encode(DATA).decode(), "dataCrc32c": "not-a-number"}
    with pytest.raises(PiperError, match="not a secret payload"):
        await read(serve(secret_manager(payload)))
