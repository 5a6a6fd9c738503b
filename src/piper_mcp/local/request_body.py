"""Reading a request body into a protocol model, or an HTTP error saying what is wrong.

Bodies are capped at 64 KiB; malformed JSON, a wrong content type, unknown
or missing fields and wrong types all get a 4xx with the protocol's error body.
"""

from __future__ import annotations

import json
from typing import TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from piper_mcp.piper.protocol import error_body
from piper_mcp.piper.protocol_names import INVALID_REQUEST
from piper_mcp.validation import first_problem

MAX_BODY_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


class RequestRejected(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.response = JSONResponse(error_body(code, description), status_code=status)


def rejected(status: int, code: str, description: str) -> RequestRejected:
    return RequestRejected(status, code, description)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise rejected(413, INVALID_REQUEST, f"Body is larger than {MAX_BODY_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise rejected(413, INVALID_REQUEST, f"Body is larger than {MAX_BODY_BYTES} bytes.")
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _validated(model: type[Model], data: object) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise rejected(400, INVALID_REQUEST, f"{first_problem(error)}.") from None


async def json_body(request: Request, model: type[Model]) -> Model:
    if _media_type(request) != "application/json":
        raise rejected(415, INVALID_REQUEST, "Send the body as application/json.")
    raw = await _body(request)
    try:
        data = json.loads(raw)
    except ValueError:
        raise rejected(400, INVALID_REQUEST, "The body is not valid JSON.") from None
    except RecursionError:  # 64 KiB of `[` nests deeper than the parser recurses
        raise rejected(400, INVALID_REQUEST, "The body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise rejected(400, INVALID_REQUEST, "The body must be a JSON object.")
    return _validated(model, data)


async def form_body(request: Request, model: type[Model]) -> Model:
    if _media_type(request) != "application/x-www-form-urlencoded":
        raise rejected(415, INVALID_REQUEST, "Send the body as application/x-www-form-urlencoded.")
    raw = await _body(request)
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise rejected(400, INVALID_REQUEST, "The body is not valid form encoding.") from None
    repeated = [name for name, values in fields.items() if len(values) > 1]
    if repeated:
        raise rejected(400, INVALID_REQUEST, f"Field {repeated[0]!r} is given more than once.")
    return _validated(model, {name: values[0] for name, values in fields.items()})


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
