"""One brokered call: the model's request checked against the rule, sent with the credential.

`target_host` checks everything that can be checked before anything is sent or
the user is asked; `send` attaches the credential, connects only to checked
addresses (see `transport`), follows redirects on the same host only, and
returns the answer scrubbed of the credential (see `answer`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

import anyio
import httpcore
import httpx
from pydantic import BaseModel, ConfigDict

from piper_mcp import __version__
from piper_mcp.broker.answer import ApiResponse, read_answer
from piper_mcp.broker.errors import BrokerRefusal
from piper_mcp.broker.hosts import host_key, normal_host, port_of
from piper_mcp.broker.rules import PLACEHOLDER, ApiRule, Injection, is_reserved_header
from piper_mcp.broker.scrub import CredentialScrubber
from piper_mcp.broker.transport import CheckedNetworkBackend, Resolver, default_ssl_context
from piper_mcp.printable import has_control_characters, printable, quoted

__all__ = ["ApiRequest", "ApiResponse", "BrokerRefusal", "send", "target_host"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_REQUEST_BODY = 1_048_576
MAX_URL_LENGTH = 8192
MAX_HEADERS = 64
MAX_HEADER_LENGTH = 8192
MAX_REDIRECTS = 5
USER_AGENT = f"piper-mcp/{__version__}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADER_NAME_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


class ApiRequest(BaseModel):
    """The request the model asks for; everything in it is untrusted."""

    model_config = ConfigDict(extra="forbid")

    method: str
    url: str
    headers: dict[str, str] = {}
    body: str | None = None


def _same_header(name: str, other: str) -> bool:
    return name.lower().replace("_", "-") == other.lower().replace("_", "-")


@dataclass(frozen=True)
class _Checked:
    """A request that passed `target_host`, in the parts it is sent as."""

    method: str
    host: str  # normal form, as connected to and as TLS checks it
    port: int
    key: str  # as the rule lists it
    target: str  # path and query, without the credential
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


def _parameter_names(query: str) -> list[str]:
    return [unquote_plus(pair.partition("=")[0]) for pair in query.split("&") if pair]


def _without_parameter(target: str, name: str) -> str:
    """`target` without query parameter `name` (any case, any encoding of it)."""
    path, _, query = target.partition("?")
    kept = [
        pair
        for pair in query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]).lower() != name.lower()
    ]
    return f"{path}?{'&'.join(kept)}" if kept else path


def _with_credential(target: str, inject: Injection, injected: str) -> str:
    if inject.where != "query":
        return target
    parameter = f"{quote(inject.name, safe='')}={quote(injected, safe='')}"
    return f"{target}&{parameter}" if "?" in target else f"{target}?{parameter}"


def _checked_headers(rule: ApiRule, headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    if len(headers) > MAX_HEADERS:
        raise BrokerRefusal(
            f"The request has {len(headers)} headers; send at most {MAX_HEADERS}.",
            reason="bad_header",
        )
    for name, value in headers.items():
        if not name or not set(name.lower()) <= _HEADER_NAME_CHARACTERS:
            raise BrokerRefusal(
                f"{quoted(name)} is not a header name; use letters, digits and dashes.",
                reason="bad_header",
            )
        if has_control_characters(value) or len(value) > MAX_HEADER_LENGTH:
            raise BrokerRefusal(
                f"The value of the {name} header holds a line break or control character, or "
                f"is longer than {MAX_HEADER_LENGTH} characters; send it on one plain line.",
                reason="bad_header",
            )
        # Some servers (CGI's HTTP_X_API_KEY) read X_Api_Key as X-Api-Key.
        if rule.inject.where == "header" and _same_header(name, rule.inject.name):
            raise BrokerRefusal(
                f"Leave out the {name} header: piper-mcp sets it to the credential itself.",
                reason="injected_header",
            )
        if is_reserved_header(name):
            raise BrokerRefusal(
                f"Leave out the {name} header: piper-mcp writes the connection headers itself.",
                reason="forbidden_header",
            )
    return tuple(headers.items())


def _checked(rule: ApiRule, request: ApiRequest) -> _Checked:
    method = request.method.upper()
    if method not in METHODS:
        raise BrokerRefusal(
            f"{quoted(request.method)} is not a method call_api sends; use {', '.join(METHODS)}.",
            reason="method",
        )
    if len(request.url) > MAX_URL_LENGTH:
        raise BrokerRefusal(
            f"The URL is longer than {MAX_URL_LENGTH} characters; send large data in the body.",
            reason="bad_url",
        )
    try:
        url = httpx.URL(request.url)
        host = normal_host(url.raw_host.decode("ascii"))
    except (httpx.InvalidURL, ValueError):
        raise BrokerRefusal(
            f"{quoted(request.url)} is not a URL call_api can use; write it as "
            "https://host/path?query.",
            reason="bad_url",
        ) from None
    if url.scheme != "https":
        raise BrokerRefusal(
            f"{quoted(request.url)} is not an https:// URL; call_api sends credentials over "
            "HTTPS only.",
            reason="scheme",
        )
    if url.userinfo:
        raise BrokerRefusal(
            f"{quoted(request.url)} has a user name or password before the host (user@host); "
            "leave it out, piper-mcp attaches the credential.",
            reason="userinfo",
        )
    port = port_of(url)
    key = host_key(host, port)
    if key not in rule.hosts:
        raise BrokerRefusal(
            f"This credential may not be sent to {key}; its rule allows "
            f"{', '.join(rule.hosts)} only. Ask the user or operator if it should.",
            reason="host_not_allowed",
        )
    target = url.raw_path.decode("ascii")
    if rule.inject.where == "query" and rule.inject.name.lower() in (
        name.lower() for name in _parameter_names(target.partition("?")[2])
    ):
        raise BrokerRefusal(
            f"Leave out the query parameter {rule.inject.name!r}: piper-mcp sets it to the "
            "credential itself.",
            reason="injected_parameter",
        )
    headers = _checked_headers(rule, request.headers)
    body = request.body.encode() if request.body is not None else None
    if body is not None and len(body) > MAX_REQUEST_BODY:
        raise BrokerRefusal(
            f"The request body is {len(body)} bytes; call_api sends at most "
            f"{MAX_REQUEST_BODY} bytes.",
            reason="request_too_large",
        )
    return _Checked(method, host, port, key, target, headers, body)


def target_host(rule: ApiRule, request: ApiRequest) -> str:
    """The host `request` goes to, as `rule` lists it ("name" or "name:port"), after
    checking everything about the request that can be checked before sending it.

    Raises `BrokerRefusal` saying what is wrong and what to send instead.
    """
    return _checked(rule, request).key


def _injected(inject: Injection, credential: str) -> str:
    value = inject.format.replace(PLACEHOLDER, credential)
    # A header carries visible ASCII only: anything else is either refused by the HTTP
    # layer with an error of its own, or reaches an echo as mojibake the scrubber misses.
    plain = all(" " <= char <= "~" for char in value)
    if not credential.strip() or (inject.where == "header" and not plain):
        raise BrokerRefusal(
            "The credential cannot be attached: it is empty or holds a line break, a control "
            "character or a non-ASCII character; ask the user to check the value stored.",
            reason="bad_credential",
        )
    return value


def _headers(
    call: _Checked, method: str, inject: Injection, injected: str, body: bytes | None
) -> list[tuple[bytes, bytes]]:
    headers = [("Host", call.key), ("Accept-Encoding", "identity")]
    if not any(name.lower() == "user-agent" for name, _ in call.headers):
        headers.append(("User-Agent", USER_AGENT))
    headers.extend(call.headers)
    if inject.where == "header":
        headers.append((inject.name, injected))
    if body is not None or method in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(len(body or b""))))
    return [(name.encode(), value.encode()) for name, value in headers]


def _same_host_target(call: _Checked, current: str, location: str, inject: Injection) -> str | None:
    """Where a redirect to `location` leads on the same scheme, host and port; else None."""
    try:
        goal = httpx.URL(f"https://{call.key}{current}").join(location)
        host = normal_host(goal.raw_host.decode("ascii"))
    except (httpx.InvalidURL, ValueError):
        return None
    same_origin = (goal.scheme, host, port_of(goal)) == ("https", call.host, call.port)
    if not same_origin or goal.userinfo:
        return None
    target = goal.raw_path.decode("ascii")
    return _without_parameter(target, inject.name) if inject.where == "query" else target


def _location(response: httpcore.Response) -> str | None:
    if response.status not in _REDIRECTS:
        return None
    for name, value in response.headers:
        if name.lower() == b"location":
            return value.decode("latin-1").strip() or None
    return None


async def _exchange(
    pool: httpcore.AsyncConnectionPool,
    rule: ApiRule,
    call: _Checked,
    injected: str,
    scrubber: CredentialScrubber,
) -> ApiResponse:
    method, target, body = call.method, call.target, call.body
    timeouts = dict.fromkeys(("connect", "read", "write", "pool"), rule.timeout)
    redirects = 0
    while True:
        url = httpcore.URL(
            scheme=b"https",
            host=call.host.encode("ascii"),
            port=call.port,
            target=_with_credential(target, rule.inject, injected).encode("ascii"),
        )
        headers = _headers(call, method, rule.inject, injected, body)
        async with pool.stream(
            method, url, headers=headers, content=body, extensions={"timeout": timeouts}
        ) as response:
            location = _location(response)
            if location is None:
                return await read_answer(response, limit=rule.max_response_bytes, scrubber=scrubber)
            following = _same_host_target(call, target, location, rule.inject)
            if following is None or redirects == MAX_REDIRECTS:
                # Scrubbed before it is cut, so no cut leaves half a credential.
                shown = printable(scrubber.text(location))
                shown = shown if len(shown) <= 300 else f"{shown[:300]}…"
                note = (
                    f"redirect to another host not followed: {shown}"
                    if following is None
                    else f"stopped after {MAX_REDIRECTS} redirects; the last one went to {shown}"
                )
                return await read_answer(
                    response, limit=rule.max_response_bytes, scrubber=scrubber, note=note
                )
        target, redirects = following, redirects + 1
        # As browsers and httpx do: 303 turns anything but HEAD into GET, 301/302 a POST.
        if (response.status == 303 and method != "HEAD") or (
            response.status in (301, 302) and method == "POST"
        ):
            method, body = "GET", None


async def send(
    rule: ApiRule,
    credential: str,
    request: ApiRequest,
    *,
    ssl_context: ssl.SSLContext | None = None,
    resolve: Resolver | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> ApiResponse:
    """Send `request` with `credential` attached as `rule` says, and return the answer.

    `ssl_context`: None verifies certificates as httpx does (SSL_CERT_FILE, SSL_CERT_DIR,
    else certifi). `resolve`: host, port -> addresses, the system resolver by default.
    `network_backend`: what opens sockets to the checked addresses, httpcore's by default.
    Raises `BrokerRefusal`, whose text never holds the credential.
    """
    call = _checked(rule, request)
    injected = _injected(rule.inject, credential)
    scrubber = CredentialScrubber((credential, injected))
    backend = CheckedNetworkBackend(
        allow_private=rule.allow_private, resolve=resolve, inner=network_backend
    )
    pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or default_ssl_context(), network_backend=backend
    )
    # Exception texts from the HTTP layer are never passed on: they may quote the URL, and
    # with it a credential in the query.
    try:
        async with pool:
            with anyio.fail_after(rule.timeout):
                return await _exchange(pool, rule, call, injected, scrubber)
    except (TimeoutError, httpcore.TimeoutException):
        raise BrokerRefusal(
            f"{call.key} did not answer within the rule's {rule.timeout:g} seconds; try a "
            'smaller request, or ask the operator for a longer "timeout" in the rule.',
            reason="timeout",
        ) from None
    except httpcore.ConnectError as error:
        # httpcore raises it from the ssl error, and its pool again `from None`.
        if isinstance(error.__cause__ or error.__context__, ssl.SSLError):
            raise BrokerRefusal(
                f"The TLS handshake with {call.key} failed (its certificate is not trusted or "
                "does not name it), so nothing was sent. A private certificate authority goes "
                "in SSL_CERT_FILE.",
                reason="tls",
            ) from None
        raise BrokerRefusal(
            f"Could not connect to {call.key}; check the host and port, or try again later.",
            reason="connect_failed",
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError):
        raise BrokerRefusal(
            f"The connection to {call.key} broke off, or its answer was not HTTP; try again later.",
            reason="broken_response",
        ) from None
