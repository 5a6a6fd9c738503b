"""An API that answers like an attacker: what a steered model could make it send back.

The model chooses the request, and a reflecting or hostile API chooses the answer:
the key in a header's name, in the media type or the content encoding, in thousands
of headers, in one header bigger than HTTP takes, in a gzip bomb, spelled in JSON
escapes across the size limit, or a redirect to the same server by its address.
Each test says which protection it guards; the case-folding, latin-1 and header-name
ones were holes an attack found, closed in `broker/answer.py` and `broker/scrub.py`.

The hostile server is its own HTTPS server on loopback (its own trustme CA); the
name api.example.test resolves to it through conftest.py's test resolver.
"""

from __future__ import annotations

import gzip
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import trustme
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from piper_mcp.broker.call import MAX_REDIRECTS, ApiRequest, ApiResponse, BrokerRefusal, send
from piper_mcp.broker.rules import BEARER, ApiRule, Injection
from piper_mcp.local.server_thread import ServerThread, Site, Tls
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.brokered_calls import BrokeredCalls
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.policy import RevealPolicy
from piper_mcp.server.redaction import encodings
from tests.broker.conftest import API_HOST, resolve

pytestmark = pytest.mark.anyio

# Keys as real APIs issue them: only HTTP token characters, so a header name can carry
# them. Hex keys (Datadog, Twilio, Mailgun) are lower case; most others mix cases.
HEX_KEY = "0f3c9a1b7d2e4c6a8b0d1e2f3a4b5c6d"
MIXED_KEY = "sk-Canary-HostileApi-7QzK2mWx9PbT4vRy"
QUERY = Injection(where="query", name="key")


def credential_of(request: Request) -> str:
    """The credential as the API got it: the bearer header, else the `key` parameter."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return bearer or request.query_params.get("key", "")


def hostile_app(seen: list[dict[str, str]]) -> Starlette:
    async def record(request: Request) -> str:
        key = credential_of(request)
        seen.append({"path": request.url.path, "host": request.headers.get("host", ""), "key": key})
        return key

    async def key_in_header_name(request: Request) -> Response:
        """A rate-limit header whose name is built from the key (token characters only)."""
        key = await record(request)
        response = Response("{}", media_type="application/json")
        response.raw_headers.append((f"x-ratelimit-{key}".encode(), b"1"))
        return response

    async def key_in_media_type(request: Request) -> Response:
        key = await record(request)
        return Response(b"\x89binary", media_type=f"application/x-{key}")

    async def key_in_content_encoding(request: Request) -> Response:
        key = await record(request)
        return Response(
            b"\x1f\x8bsomething", media_type="text/plain", headers={"Content-Encoding": key}
        )

    async def key_in_many_headers(request: Request) -> Response:
        key = await record(request)
        response = Response("{}", media_type="application/json")
        for index in range(int(request.query_params["n"])):
            link = f"<https://{API_HOST}/page/{index}?key={quote(key, safe='')}>; rel=next"
            response.raw_headers.append((b"link", link.encode()))
            response.raw_headers.append((b"x-ratelimit-remaining", key.encode()))
        return response

    async def key_in_huge_header(request: Request) -> Response:
        key = await record(request)
        response = Response("{}", media_type="application/json")
        response.raw_headers.append((b"x-request-id", b"p" * 200_000 + key.encode()))
        return response

    async def key_in_utf8_header(request: Request) -> Response:
        """Echoes the (decoded) query credential into a header as raw UTF-8 bytes."""
        key = await record(request)
        response = Response("{}", media_type="application/json")
        response.raw_headers.append((b"x-request-id", key.encode("utf-8")))
        return response

    async def gzip_bomb(request: Request) -> Response:
        await record(request)
        bomb = gzip.compress(b"\0" * 20_000_000, compresslevel=9)  # some 20 KB on the wire
        return Response(bomb, media_type="application/json", headers={"Content-Encoding": "gzip"})

    async def key_spelled_in_json(request: Request) -> Response:
        """`pad` bytes, then the key with every other character as a JSON \\u escape."""
        key = await record(request)
        spelled = "".join(
            f"\\u{ord(char):04x}" if index % 2 == 0 else char for index, char in enumerate(key)
        )
        pad = int(request.query_params["pad"])
        body = '{"pad": "' + "x" * pad + '", "echo": "' + spelled + '", "more": "' + "y" * 400
        return Response(body.encode() + b'"}', media_type="application/json")

    async def redirect(request: Request) -> Response:
        await record(request)
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def loop(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/loop", status_code=302)

    async def landing(request: Request) -> Response:
        await record(request)
        return Response("landed", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/key-in-header-name", key_in_header_name),
            Route("/key-in-media-type", key_in_media_type),
            Route("/key-in-content-encoding", key_in_content_encoding),
            Route("/key-in-many-headers", key_in_many_headers),
            Route("/key-in-huge-header", key_in_huge_header),
            Route("/key-in-utf8-header", key_in_utf8_header),
            Route("/gzip-bomb", gzip_bomb),
            Route("/key-spelled-in-json", key_spelled_in_json),
            Route("/redirect", redirect),
            Route("/loop", loop),
            Route("/landing", landing),
        ]
    )


@dataclass
class Hostile:
    """The hostile API as the tests reach it, and what reached it."""

    port: int
    ssl_context: ssl.SSLContext
    seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"{API_HOST}:{self.port}"

    def url(self, path: str) -> str:
        return f"https://{self.host}{path}"

    def rule(self, **fields: Any) -> ApiRule:
        fields.setdefault("hosts", (self.host,))
        fields.setdefault("inject", BEARER)
        fields.setdefault("allow_private", True)  # it is on loopback
        return ApiRule(**fields)

    async def call(self, path: str, credential: str, **fields: Any) -> ApiResponse:
        return await send(
            self.rule(**fields),
            credential,
            ApiRequest(method="GET", url=self.url(path)),
            ssl_context=self.ssl_context,
            resolve=resolve,
        )


@pytest.fixture(scope="module")
def running_hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    folder = tmp_path_factory.mktemp("hostile-tls")
    authority = trustme.CA()
    served = folder / "server.pem"
    authority.issue_cert(API_HOST, "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(served)
    )
    context = ssl.create_default_context()
    authority.configure_trust(context)
    seen: list[dict[str, str]] = []
    sock = bind("127.0.0.1", 0)
    thread = ServerThread([Site(hostile_app(seen), sock, Tls(served, served))])
    thread.start()
    try:
        yield Hostile(sock.getsockname()[1], context, seen)
    finally:
        thread.stop()


@pytest.fixture
def hostile(running_hostile: Hostile) -> Hostile:
    running_hostile.seen.clear()
    return running_hostile


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def holds(text: str, key: str) -> bool:
    """Whether `text` holds the key in any known spelling, or in another letter case."""
    folded = text.casefold()
    return any(form in text or form.casefold() in folded for form in encodings(key) | {key})


# --- what the broker changes before it scrubs (case, decoding), and header names ---


@pytest.mark.parametrize("key", [HEX_KEY, MIXED_KEY], ids=["hex", "mixed-case"])
async def test_a_key_echoed_in_a_header_name_is_not_returned(hostile: Hostile, key: str) -> None:
    """Guards rule 16's "it never comes back in the answer" for header names."""
    answer = await hostile.call("/key-in-header-name", key)

    assert hostile.seen[0]["key"] == key  # the API got it, so it could echo it
    assert not holds(answer.model_dump_json(), key)


@pytest.mark.parametrize("path", ["/key-in-media-type", "/key-in-content-encoding"])
async def test_a_key_echoed_in_the_media_type_or_encoding_is_not_quoted_in_the_note(
    hostile: Hostile, path: str
) -> None:
    """Guards the note: it quotes what the API said about the body, scrubbed."""
    answer = await hostile.call(path, MIXED_KEY)

    assert answer.body is None and answer.note is not None  # described, not shown
    assert not holds(answer.model_dump_json(), MIXED_KEY)


async def test_a_non_ascii_query_key_echoed_in_a_header_is_not_returned(hostile: Hostile) -> None:
    """Guards the query injection as `_injected` guards the header one (mojibake echoes)."""
    key = "ключ-canary-query-0d9e8f7a"

    answer = await hostile.call("/key-in-utf8-header", key, inject=QUERY)

    mojibake = key.encode("utf-8").decode("latin-1")  # what a latin-1 reading makes of it
    assert hostile.seen[0]["key"] == key
    assert not holds(answer.model_dump_json(), key)
    assert not any(mojibake in value for value in answer.headers.values())


async def test_the_model_s_result_has_no_key_in_a_header_name_end_to_end(
    hostile: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards rule 16 end to end, and rule 6's backstop: the server's redactor knows the
    value, so a result's headers should pass it too, not only the broker's scrubber."""
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.add_agent("hostile-agent", None, owner_user_id=me, variables=["hex_key"])
    vault.put_secret("Hex key", HEX_KEY, owner_user_id=me)
    vault.grant(me, "hostile-agent", "hex_key", "Hex key")
    vault.close()
    local = LocalPiper("hostile-agent").open()
    try:
        client = AsyncPiperClient.from_settings(local.settings, http_client=local.http_client())
        service = CredentialService(
            client, local.declared, policy=RevealPolicy("allow"), grants=local.grants
        )
        calls = BrokeredCalls(
            service,
            {"hex_key": hostile.rule()},
            ssl_context=hostile.ssl_context,
            resolve=resolve,
        )
        async with Client(build_server(service, calls=calls)) as mcp:
            result = await mcp.call_tool(
                "call_api", {"variable": "hex_key", "url": hostile.url("/key-in-header-name")}
            )
    finally:
        local.stop()
    assert result.is_error is False, result.content
    assert hostile.seen[0]["key"] == HEX_KEY
    assert HEX_KEY not in json.dumps(result.structured_content)
    assert HEX_KEY not in "".join(block.text for block in result.content if block.type == "text")


# --- what held ---


async def test_thousands_of_echoing_headers_are_each_scrubbed(hostile: Hostile) -> None:
    """Guards `_shown_headers`: every value of every shown header passes the scrubber."""
    answer = await hostile.call("/key-in-many-headers?n=300", MIXED_KEY)

    assert answer.headers["link"].count("[redacted]") == 300
    assert answer.headers["x-ratelimit-remaining"].count("[redacted]") == 300
    assert MIXED_KEY not in answer.model_dump_json()
    assert not holds(answer.model_dump_json(), MIXED_KEY)


async def test_a_header_bigger_than_http_takes_is_a_refusal_without_the_key(
    hostile: Hostile,
) -> None:
    """Guards the refusal texts: an answer the HTTP layer rejects is said, never quoted."""
    with pytest.raises(BrokerRefusal) as refused:
        await hostile.call("/key-in-huge-header", MIXED_KEY)

    assert refused.value.reason == "broken_response"
    assert not holds(str(refused.value), MIXED_KEY)


async def test_a_gzip_bomb_is_neither_inflated_nor_shown(hostile: Hostile) -> None:
    """Guards `Accept-Encoding: identity` and no decoding: 20 MB of zeros stay 20 KB."""
    answer = await hostile.call("/gzip-bomb", MIXED_KEY)

    assert answer.body is None
    assert answer.body_bytes < 100_000 and not answer.truncated
    assert answer.note == f"compressed body not shown (gzip, {answer.body_bytes} bytes)"


@pytest.mark.parametrize("cut", [3, 20, 60, 120])
async def test_a_key_spelled_in_json_escapes_across_the_size_limit_leaves_no_part(
    hostile: Hostile, cut: int
) -> None:
    """Guards `reach`: the escaped spelling is some four times the key, the cut falls in it."""
    pad = 100
    start = len('{"pad": "') + pad + len('", "echo": "')
    answer = await hostile.call(
        f"/key-spelled-in-json?pad={pad}", MIXED_KEY, max_response_bytes=start + cut
    )

    assert answer.truncated and answer.body is not None
    assert answer.body.endswith('"echo": "[redacted]')
    assert "\\u" not in answer.body


async def test_a_redirect_to_the_same_server_by_its_address_is_not_followed(
    hostile: Hostile,
) -> None:
    """Guards "never along a redirect to another host": the rule names a host, not an address;
    127.0.0.1 is where api.example.test is, but the credential must not go there by number."""
    to = f"https://127.0.0.1:{hostile.port}/landing"

    answer = await hostile.call(f"/redirect?{urlencode({'to': to})}", MIXED_KEY)

    assert answer.status == 302
    assert answer.note == f"redirect to another host not followed: {to}"
    assert [entry["path"] for entry in hostile.seen] == ["/redirect"]


async def test_a_redirect_loop_on_the_same_host_stops_and_the_key_went_nowhere_else(
    hostile: Hostile,
) -> None:
    """Guards MAX_REDIRECTS: a loop costs a few requests to the rule's host, no more."""
    answer = await hostile.call("/loop", MIXED_KEY)

    assert answer.status == 302 and answer.note is not None
    assert answer.note.startswith(f"stopped after {MAX_REDIRECTS} redirects")
    assert len(hostile.seen) == MAX_REDIRECTS + 1
    assert {entry["host"] for entry in hostile.seen} == {hostile.host}
