"""A steered model attacks a brokered call: each test is one way it would try to get the key.

The credential must go to the hosts its rule names and nowhere else, and must
not come back, in any form, in what the model reads: answers, notes, errors.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
import ssl
import traceback
from urllib.parse import quote, urlencode

import pytest

from piper_mcp.broker.call import ApiRequest, ApiResponse, BrokerRefusal, send, target_host
from piper_mcp.broker.rules import ApiRule, Injection
from piper_mcp.broker.scrub import CredentialScrubber
from piper_mcp.broker.transport import is_public
from piper_mcp.server.redaction import encodings
from tests.broker.conftest import (
    API_HOST,
    CREDENTIAL,
    PUBLIC_ADDRESS,
    Servers,
    StandIn,
    resolve,
    sequence_resolver,
)

pytestmark = pytest.mark.anyio

QUERY = Injection(where="query", name="key")


def leaks(text: str, secret: str = CREDENTIAL) -> bool:
    """Whether `text` holds the secret, or any encoded form of it, or its first half."""
    return any(form in text for form in encodings(secret) | {secret[: len(secret) // 2]})


def shown(answer: ApiResponse) -> str:
    """Everything the model reads of an answer."""
    return answer.model_dump_json()


async def refusal(
    servers: Servers,
    url: str,
    *,
    rule: ApiRule | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> BrokerRefusal:
    """The refusal `send` raises (the API server's rule by default), checked to be the one
    `target_host` raises, before the user is asked; nothing reaches either server."""
    rule = rule or servers.rule()
    request = ApiRequest(method=method, url=url, headers=headers or {}, body=body)
    with pytest.raises(BrokerRefusal) as before:
        target_host(rule, request)
    with pytest.raises(BrokerRefusal) as refused:
        await send(rule, CREDENTIAL, request, ssl_context=servers.ssl_context, resolve=resolve)
    assert refused.value.reason == before.value.reason
    assert servers.api_requests == servers.other_requests == []
    return refused.value


# Where the credential may go: hosts, schemes, ports.


@pytest.mark.parametrize(
    "url",
    [
        "http://{api}/needs-key",
        "ftp://{api}/needs-key",
        "wss://{api}/needs-key",
    ],
)
async def test_only_https_carries_the_credential(servers: Servers, url: str) -> None:
    refused = await refusal(servers, url.format(api=servers.api))

    assert refused.reason == "scheme"


@pytest.mark.parametrize(
    "url",
    [
        "https://{api}@127.0.0.1:{port}/needs-key",
        "https://{api}@{other}/needs-key",
        "https://user:pw@{api}/needs-key",
    ],
)
async def test_a_user_name_in_the_url_is_refused(servers: Servers, url: str) -> None:
    refused = await refusal(
        servers, url.format(api=servers.api, other=servers.other, port=servers.api_port)
    )

    assert refused.reason == "userinfo"


@pytest.mark.parametrize(
    "url",
    [
        "https://{other}/needs-key",  # another host, same server
        "https://{api_host}:{other_port}/needs-key",  # the right name, another port
        "https://{api_host}/needs-key",  # the default port, not listed
        "https://127.0.0.1:{api_port}/needs-key",  # its address, not its name
        "https://localhost:{api_port}/needs-key",
        "https://\u0430pi.example.test:{api_port}/needs-key",  # Cyrillic а
        "https://api.example.test.evil.example:{api_port}/needs-key",
        "https://evil-api.example.test:{api_port}/needs-key",
        "https://api%2Eexample.test:{api_port}/needs-key",
        "https://api.example.test%00:{api_port}/needs-key",
    ],
)
async def test_a_host_or_port_the_rule_does_not_list_is_refused(servers: Servers, url: str) -> None:
    refused = await refusal(
        servers,
        url.format(
            other=servers.other,
            api_host=API_HOST,
            api_port=servers.api_port,
            other_port=servers.other_port,
        ),
    )

    assert refused.reason in ("host_not_allowed", "bad_url")


@pytest.mark.parametrize(
    "host", ["API.EXAMPLE.TEST", "api.example.test.", "Api.Example.Test.", "api.example.test"]
)
async def test_case_and_a_trailing_dot_name_the_same_host(servers: Servers, host: str) -> None:
    answer = await servers.call(f"https://{host}:{servers.api_port}/needs-key")

    assert answer.status == 200


async def test_an_internationalised_rule_host_matches_its_punycode_only(servers: Servers) -> None:
    rule = servers.rule(hosts=(f"bücher.example.test:{servers.api_port}",))
    punycode = f"xn--bcher-kva.example.test:{servers.api_port}"

    for listed in (f"https://{punycode}/", f"https://BÜCHER.example.test:{servers.api_port}/"):
        assert target_host(rule, ApiRequest(method="GET", url=listed)) == punycode
    with pytest.raises(BrokerRefusal):
        target_host(
            rule, ApiRequest(method="GET", url=f"https://bucher.example.test:{servers.api_port}/")
        )


# Where the connection goes: addresses checked when connecting.


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["::1"],
        ["10.1.2.3"],
        ["172.16.0.9"],
        ["192.168.1.1"],
        ["169.254.169.254"],  # cloud metadata
        ["100.64.0.1"],  # carrier-grade NAT
        ["0.0.0.0"],
        ["224.0.0.1"],
        ["240.0.0.1"],
        ["fe80::1"],
        ["fd00::1"],
        ["::ffff:127.0.0.1"],  # IPv4-mapped
        ["2002:7f00:1::1"],  # 6to4 around 127.0.0.1
        ["64:ff9b::a9fe:a9fe"],  # NAT64 around 169.254.169.254
        ["64:ff9b:1::a"],  # local-use NAT64
        ["2001::1"],  # Teredo
        ["ff02::1"],
        ["::"],
        [PUBLIC_ADDRESS, "127.0.0.1"],  # one bad address spoils the name
    ],
)
async def test_a_name_resolving_to_a_private_address_is_not_connected(
    servers: Servers, addresses: list[str]
) -> None:
    resolver, _ = sequence_resolver(addresses)
    sockets = StandIn()

    with pytest.raises(BrokerRefusal) as refused:
        await send(
            servers.rule(allow_private=False),
            CREDENTIAL,
            ApiRequest(method="GET", url=servers.url("/needs-key")),
            ssl_context=servers.ssl_context,
            resolve=resolver,
            network_backend=sockets,
        )

    assert refused.value.reason == "private_address"
    assert sockets.asked == []
    assert servers.api_requests == []


async def test_localhost_is_not_reached_without_allow_private(servers: Servers) -> None:
    """The real system resolver, the real name: the rule lists it, the address check still holds."""
    rule = servers.rule(hosts=(f"localhost:{servers.api_port}",), allow_private=False)
    request = ApiRequest(method="GET", url=f"https://localhost:{servers.api_port}/needs-key")

    with pytest.raises(BrokerRefusal) as refused:
        await send(rule, CREDENTIAL, request, ssl_context=servers.ssl_context)

    assert refused.value.reason == "private_address"
    assert servers.api_requests == []
    allowed = rule.model_copy(update={"allow_private": True})
    assert (await send(allowed, CREDENTIAL, request, ssl_context=servers.ssl_context)).status == 200


async def test_a_listed_loopback_address_is_not_reached_without_allow_private(
    servers: Servers,
) -> None:
    rule = servers.rule(hosts=(f"127.0.0.1:{servers.api_port}",), allow_private=False)
    request = ApiRequest(method="GET", url=f"https://127.0.0.1:{servers.api_port}/needs-key")

    with pytest.raises(BrokerRefusal) as refused:
        await send(rule, CREDENTIAL, request, ssl_context=servers.ssl_context)

    assert refused.value.reason == "private_address"
    assert servers.api_requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(servers: Servers) -> None:
    """DNS rebinding: a public answer for the check, loopback for any later lookup.

    A broker that checked one lookup and then connected by name would ask for the name
    (and, the name being localhost, reach the server anyway); this one connects to the
    public address it checked (played by the server, see `StandIn`).
    """
    resolver, lookups = sequence_resolver([PUBLIC_ADDRESS], ["127.0.0.1"])
    sockets = StandIn({PUBLIC_ADDRESS: "127.0.0.1"})
    rule = servers.rule(hosts=(f"localhost:{servers.api_port}",), allow_private=False)

    answer = await send(
        rule,
        CREDENTIAL,
        ApiRequest(method="GET", url=f"https://localhost:{servers.api_port}/needs-key"),
        ssl_context=servers.ssl_context,
        resolve=resolver,
        network_backend=sockets,
    )

    assert answer.status == 200
    assert sockets.asked == [PUBLIC_ADDRESS]
    assert lookups == ["localhost"]


async def test_a_rebound_name_is_caught_on_the_next_connection(servers: Servers) -> None:
    """The first connection goes to the public address; the redirect's lookup says loopback."""
    resolver, lookups = sequence_resolver([PUBLIC_ADDRESS], ["127.0.0.1"])
    sockets = StandIn({PUBLIC_ADDRESS: "127.0.0.1"})

    with pytest.raises(BrokerRefusal) as refused:
        await send(
            servers.rule(allow_private=False),
            CREDENTIAL,
            ApiRequest(method="GET", url=servers.url("/redirect?to=/needs-key")),
            ssl_context=servers.ssl_context,
            resolve=resolver,
            network_backend=sockets,
        )

    assert refused.value.reason == "private_address"
    assert sockets.asked == [PUBLIC_ADDRESS]
    assert [seen["path"] for seen in servers.api_requests] == ["/redirect"]
    assert lookups == [API_HOST, API_HOST]


async def test_when_one_checked_address_fails_the_next_checked_one_is_tried(
    servers: Servers,
) -> None:
    unreachable = "198.41.0.4"  # public, so it passes the check; the stand-in refuses it
    resolver, _ = sequence_resolver([unreachable, PUBLIC_ADDRESS])
    sockets = StandIn({PUBLIC_ADDRESS: "127.0.0.1"})

    answer = await send(
        servers.rule(allow_private=False),
        CREDENTIAL,
        ApiRequest(method="GET", url=servers.url("/needs-key")),
        ssl_context=servers.ssl_context,
        resolve=resolver,
        network_backend=sockets,
    )

    assert answer.status == 200
    assert sockets.asked == [unreachable, PUBLIC_ADDRESS]


@pytest.mark.parametrize("address", [PUBLIC_ADDRESS, "2606:4700:4700::1111", "2002:5db8:d70e::1"])
def test_public_addresses_pass_the_check(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


# Redirects: followed on the same host only.


@pytest.mark.parametrize(
    "to",
    [
        "https://{other}/landing",
        "https://{api_host}:{other_port}/landing",  # same name, another port
        "http://{api}/needs-key",  # same host, plain HTTP
        "https://{api}@{other}/landing",
        "//{other}/landing",
    ],
)
async def test_a_redirect_elsewhere_is_returned_not_followed(servers: Servers, to: str) -> None:
    location = to.format(
        other=servers.other, api=servers.api, api_host=API_HOST, other_port=servers.other_port
    )

    answer = await servers.call(f"/redirect?{urlencode({'to': location})}")

    assert answer.status == 302
    assert answer.note == f"redirect to another host not followed: {location}"
    assert answer.headers["location"] == location
    assert servers.other_requests == []
    assert len(servers.api_requests) == 1


async def test_a_redirect_echoing_the_query_credential_shows_it_redacted(
    servers: Servers,
) -> None:
    """The API sends the model elsewhere with the key in the Location: note and header scrubbed."""
    rule = servers.rule(inject=QUERY)
    to = "https://{other}/steal?token={key}"

    location = to.format(other=servers.other, key=CREDENTIAL)
    answer = await servers.call(f"/redirect?{urlencode({'to': location})}", rule=rule)

    assert answer.status == 302
    assert not leaks(shown(answer))
    assert (
        answer.note
        == f"redirect to another host not followed: https://{servers.other}/steal?token=[redacted]"
    )
    assert servers.other_requests == []


async def test_a_long_location_is_cut_after_it_is_scrubbed(servers: Servers) -> None:
    """The note shows 300 characters of the Location: the cut must not fall inside the key."""
    start = f"https://{servers.other}/?token="
    location = start + "p" * (300 - len(start) - 25) + CREDENTIAL  # the cut leaves 25 of it

    answer = await servers.call(f"/redirect?{urlencode({'to': location})}")

    assert answer.note is not None and answer.note.endswith("[redacted]")
    assert not leaks(shown(answer))


# What the model may put in the request.


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
async def test_the_model_cannot_set_the_credential_header(servers: Servers, name: str) -> None:
    refused = await refusal(
        servers, servers.url("/needs-key"), headers={name: "Bearer sk-attacker-key"}
    )

    assert refused.reason == "injected_header"


@pytest.mark.parametrize("name", ["X_Api_Key", "x-api_key", "X-API-KEY"])
async def test_nor_its_underscore_twin_which_cgi_servers_read_as_the_same(
    servers: Servers, name: str
) -> None:
    rule = servers.rule(inject=Injection(where="header", name="X-Api-Key"))
    refused = await refusal(servers, servers.url("/echo"), rule=rule, headers={name: "mine"})

    assert refused.reason == "injected_header"


@pytest.mark.parametrize("query", ["key=sk-attacker", "KEY=x", "k%65y=x", "a=1&key", "Key="])
async def test_the_model_cannot_set_the_credential_parameter(servers: Servers, query: str) -> None:
    refused = await refusal(
        servers, servers.url(f"/needs-key?{query}"), rule=servers.rule(inject=QUERY)
    )

    assert refused.reason == "injected_parameter"


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Accept-Encoding",
    ],
)
async def test_connection_headers_are_the_brokers(servers: Servers, name: str) -> None:
    refused = await refusal(servers, servers.url("/echo"), headers={name: "x"})

    assert refused.reason == "forbidden_header"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "a\r\nAuthorization: Bearer sk-attacker"},
        {"X-Note": "a\nb"},
        {"X-Note": "a\x00b"},
        {"X-Note\r\nAuthorization": "Bearer x"},
        {"X Note": "spaces"},
        {"": "empty"},
        {"X-Note": "é\u202e"},
        {f"X-{n}": "x" for n in range(65)},
        {"X-Long": "x" * 8193},
    ],
)
async def test_header_injection_is_refused(servers: Servers, headers: dict[str, str]) -> None:
    refused = await refusal(servers, servers.url("/echo"), headers=headers)

    assert refused.reason == "bad_header"


@pytest.mark.parametrize(
    "url",
    [
        "https://{api}/echo\r\nHost: evil",
        "https://{api}/echo x\nAuthorization: y",
        "not a url",
        "https:///echo",
        "https://{api}/" + "a" * 9000,
    ],
)
async def test_a_malformed_url_is_refused(servers: Servers, url: str) -> None:
    refused = await refusal(servers, url.format(api=servers.api))

    assert refused.reason == "bad_url"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "GET /x HTTP/1.1\r\n"])
async def test_only_ordinary_methods_are_sent(servers: Servers, method: str) -> None:
    """TRACE would echo the request, credential header included."""
    refused = await refusal(servers, servers.url("/echo"), method=method)

    assert refused.reason == "method"


async def test_a_request_body_over_the_limit_is_refused(servers: Servers) -> None:
    refused = await refusal(servers, servers.url("/echo"), method="POST", body="x" * 1_048_577)

    assert refused.reason == "request_too_large"
    assert "1048577 bytes" in str(refused)


@pytest.mark.parametrize("credential", ["", "  ", "sk-line\r\nX-Evil: 1", "sk-nul\x00", "sk-ключ"])
async def test_a_credential_that_cannot_go_in_a_header_is_not_sent(
    servers: Servers, credential: str
) -> None:
    with pytest.raises(BrokerRefusal) as refused:
        await servers.call("/needs-key", credential=credential)

    assert refused.value.reason == "bad_credential"
    assert not credential.strip() or not leaks(str(refused.value), credential)
    assert servers.api_requests == []


# What comes back.


@pytest.mark.parametrize("inject", [None, QUERY], ids=["header", "query"])
async def test_an_api_that_echoes_the_key_hands_back_none_of_it(
    servers: Servers, inject: Injection | None
) -> None:
    rule = servers.rule(inject=inject) if inject else servers.rule()

    for path in ("/echo-key", "/echo?page=1", "/binary?typed", "/compressed"):
        answer = await servers.call(path, rule=rule)

        assert answer.status == 200
        assert not leaks(shown(answer)), f"{path} leaks the key"
    echoed = await servers.call("/echo-key", rule=rule)
    assert echoed.body is not None and echoed.body.count("[redacted]") >= 5
    assert echoed.headers["x-request-id"] == "[redacted]"


async def test_a_key_echoed_as_utf16_is_not_shown(servers: Servers) -> None:
    """Read as UTF-8, UTF-16 text is the key with NULs between: one replace() from the key."""
    answer = await servers.call("/echo-key?codec=utf-16-le")

    assert answer.body is None
    assert answer.note == f"body with NUL bytes not shown (text/plain, {answer.body_bytes} bytes)"
    assert not leaks(shown(answer).replace("\\u0000", ""))


@pytest.mark.parametrize("form", ["plain", "base64"])
@pytest.mark.parametrize("cut", [1, 10, 30])
async def test_a_key_cut_at_the_size_limit_leaves_no_part_behind(
    servers: Servers, form: str, cut: int
) -> None:
    """The limit falls `cut` bytes into the echoed key: it is redacted whole, not shown in part."""
    answer = await servers.call(
        f"/key-at-end?pad=1000&form={form}", rule=servers.rule(max_response_bytes=1000 + cut)
    )

    assert answer.truncated
    assert answer.body == "x" * 1000 + "[redacted]"


@pytest.mark.parametrize("failure", ["connect_failed", "timeout", "tls"])
async def test_errors_never_hold_the_credential(servers: Servers, failure: str) -> None:
    """A query credential is in the URL the HTTP layer saw: no error text or traceback has it."""
    # Only the timeout case has a short timeout: a handshake slowed by a busy machine
    # must not turn a TLS refusal into a timeout.
    rule = servers.rule(inject=QUERY, timeout=0.2 if failure == "timeout" else 30)
    url, trust = servers.url("/trickle"), servers.ssl_context
    if failure == "connect_failed":
        rule = servers.rule(inject=QUERY, hosts=(f"{API_HOST}:1",))
        url = f"https://{API_HOST}:1/x"
    if failure == "tls":
        trust = ssl.create_default_context()  # does not trust the test CA

    with pytest.raises(BrokerRefusal) as refused:
        await send(
            rule, CREDENTIAL, ApiRequest(method="GET", url=url), ssl_context=trust, resolve=resolve
        )

    assert refused.value.reason == failure
    assert not leaks("".join(traceback.format_exception(refused.value)))


@pytest.mark.parametrize(
    "spelled",
    [
        CREDENTIAL,
        quote(CREDENTIAL),  # Python's default: "/" kept
        quote(CREDENTIAL, safe=":/%#?=@[]!$&'()*+,;"),  # Starlette's Location
        quote(CREDENTIAL, safe="").lower(),
        json.dumps(CREDENTIAL)[1:-1].replace("/", "\\/"),  # PHP escapes slashes
        "".join(f"\\u{ord(char):04X}" for char in CREDENTIAL),
        html.escape(CREDENTIAL),
        "".join(f"&#{ord(char)};" for char in CREDENTIAL),
        base64.b64encode(CREDENTIAL.encode()).decode(),
        json.dumps(json.dumps(CREDENTIAL)),
        repr(CREDENTIAL.encode()),
    ],
)
def test_every_spelling_of_the_key_is_scrubbed(spelled: str) -> None:
    scrubbed = CredentialScrubber([CREDENTIAL]).text(f"before {spelled} after")

    assert "[redacted]" in scrubbed
    assert not leaks(scrubbed)
