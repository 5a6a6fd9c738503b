"""A brokered call as the model sees it: the request goes out with the credential, an answer back.

Every call goes to a real HTTPS server on loopback (see conftest.py).
"""

from __future__ import annotations

import json

import pytest

from piper_mcp.broker.call import ApiRequest, BrokerRefusal, send, target_host
from piper_mcp.broker.rules import BEARER, ApiRule, Injection
from tests.broker.conftest import ALL_METHODS, API_HOST, CREDENTIAL, Servers, resolve
from tests.conftest import refusing_port

pytestmark = pytest.mark.anyio


async def test_the_credential_goes_in_the_header_the_rule_names(servers: Servers) -> None:
    answer = await servers.call("/needs-key")

    assert (answer.status, json.loads(answer.body or "")) == (200, {"ok": True})
    assert servers.api_requests[0]["authorization"] == "Bearer <credential>"


async def test_the_credential_goes_in_the_query_parameter_the_rule_names(servers: Servers) -> None:
    rule = servers.rule(inject=Injection(where="query", name="key"))

    answer = await servers.call("/needs-key?page=2", rule=rule)

    assert answer.status == 200
    assert servers.api_requests[0]["authorization"] is None
    assert servers.api_requests[0]["query"] == "page=2&key=<credential>"


async def test_a_wrong_credential_is_the_apis_answer_not_an_error(servers: Servers) -> None:
    answer = await servers.call("/needs-key", credential="sk-not-the-right-one")

    assert answer.status == 401
    assert json.loads(answer.body or "") == {"error": "missing or wrong key"}


async def test_method_path_query_headers_and_body_arrive_as_sent(servers: Servers) -> None:
    answer = await servers.call(
        "/echo?q=caf%C3%A9&tag=a&tag=b",
        method="patch",
        headers={"Content-Type": "application/json", "X-Trace": "t-1"},
        body='{"name": "Ada ✓"}',
    )

    echoed = json.loads(answer.body or "")
    assert (echoed["method"], echoed["path"]) == ("PATCH", "/echo")
    assert echoed["params"] == [["q", "café"], ["tag", "a"], ["tag", "b"]]
    assert echoed["body"] == '{"name": "Ada ✓"}'
    headers = dict(echoed["headers"])
    assert headers["content-type"] == "application/json"
    assert headers["x-trace"] == "t-1"
    assert headers["host"] == servers.api
    assert headers["accept-encoding"] == "identity"
    assert headers["user-agent"].startswith("piper-mcp/")
    assert headers["authorization"] == "[redacted]"  # echoed back, and scrubbed


@pytest.mark.parametrize("method", ALL_METHODS)
async def test_every_allowed_method_is_sent(servers: Servers, method: str) -> None:
    answer = await servers.call("/needs-key", method=method)

    assert answer.status == 200
    assert answer.body == ("" if method == "HEAD" else '{"ok":true}')


async def test_only_useful_response_headers_are_returned(servers: Servers) -> None:
    answer = await servers.call("/echo")

    assert set(answer.headers) == {
        "content-type",
        "content-length",
        "date",
        "x-ratelimit-remaining",
    }
    assert answer.headers["x-ratelimit-remaining"] == "41"


async def test_a_redirect_on_the_same_host_is_followed_with_the_credential(
    servers: Servers,
) -> None:
    answer = await servers.call("/redirect?to=/needs-key")

    assert (answer.status, answer.note) == (200, None)
    assert [seen["path"] for seen in servers.api_requests] == ["/redirect", "/needs-key"]
    assert servers.api_requests[1]["authorization"] == "Bearer <credential>"


async def test_a_same_host_redirect_gets_the_query_credential_once(servers: Servers) -> None:
    """The API's Location may carry the parameter back; it is replaced, not doubled."""
    rule = servers.rule(inject=Injection(where="query", name="key"))
    to = "/needs-key%3Fkey%3Dstale%26page%3D3"

    answer = await servers.call(f"/redirect?to={to}", rule=rule)

    assert answer.status == 200
    assert servers.api_requests[1]["query"] == "page=3&key=<credential>"


async def test_a_303_turns_a_post_into_a_get_without_body(servers: Servers) -> None:
    answer = await servers.call("/redirect?to=/echo&status=303", method="POST", body="form=1")

    echoed = json.loads(answer.body or "")
    assert (echoed["method"], echoed["body"]) == ("GET", "")


async def test_a_307_keeps_method_and_body(servers: Servers) -> None:
    answer = await servers.call("/redirect?to=/echo&status=307", method="PUT", body="same")

    echoed = json.loads(answer.body or "")
    assert (echoed["method"], echoed["body"]) == ("PUT", "same")


async def test_a_long_redirect_chain_stops_with_a_note(servers: Servers) -> None:
    answer = await servers.call("/chain?left=9")

    assert answer.status == 307
    assert answer.note == "stopped after 5 redirects; the last one went to /chain?left=3"
    assert len(servers.api_requests) == 6


async def test_a_body_past_the_limit_is_cut_and_flagged(servers: Servers) -> None:
    """The server sends without end: reading to the end would never finish."""
    answer = await servers.call("/endless", rule=servers.rule(max_response_bytes=100_000))

    assert answer.truncated
    assert answer.body_bytes == 100_000
    assert answer.body == "z" * 100_000


async def test_a_body_within_the_limit_is_whole(servers: Servers) -> None:
    answer = await servers.call("/key-at-end?pad=10", credential="not-echoed")

    assert not answer.truncated
    assert answer.body_bytes == len(answer.body or "") == 10 + len("[redacted]") + 100


async def test_a_binary_body_is_described_not_shown(servers: Servers) -> None:
    answer = await servers.call("/binary")

    assert answer.body is None
    assert (
        answer.note == f"binary body not shown (application/octet-stream, {len(CREDENTIAL)} bytes)"
    )


async def test_a_compressed_body_is_described_not_shown(servers: Servers) -> None:
    """piper-mcp asks for identity encoding; a server that compresses anyway cannot be scrubbed."""
    answer = await servers.call("/compressed")

    assert answer.body is None
    assert answer.note is not None and answer.note.startswith("compressed body not shown (gzip")


@pytest.mark.parametrize("path", ["/trickle", "/slow-headers"])
async def test_a_slow_api_is_cut_off_at_the_rules_timeout(servers: Servers, path: str) -> None:
    with pytest.raises(BrokerRefusal) as refused:
        await servers.call(path, rule=servers.rule(timeout=0.4))

    assert refused.value.reason == "timeout"
    assert str(refused.value).startswith(
        f"{servers.api} did not answer within the rule's 0.4 seconds"
    )


async def test_an_answer_that_breaks_off_is_refused(servers: Servers) -> None:
    with pytest.raises(BrokerRefusal) as refused:
        await servers.call("/broken")

    assert refused.value.reason == "broken_response"


async def test_an_untrusted_certificate_fails_before_anything_is_sent(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    with pytest.raises(BrokerRefusal) as refused:
        await send(
            servers.rule(),
            CREDENTIAL,
            ApiRequest(method="GET", url=servers.url("/echo")),
            resolve=resolve,
        )

    assert refused.value.reason == "tls"
    assert servers.api_requests == []


async def test_the_default_trust_honours_ssl_cert_file(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(servers.ca_file))

    answer = await send(
        servers.rule(),
        CREDENTIAL,
        ApiRequest(method="GET", url=servers.url("/needs-key")),
        resolve=resolve,
    )

    assert answer.status == 200


async def test_a_closed_port_is_a_connect_failure(servers: Servers) -> None:
    with refusing_port() as sock:
        port = sock.getsockname()[1]
        rule = servers.rule(hosts=(f"{API_HOST}:{port}",))

        with pytest.raises(BrokerRefusal) as refused:
            await send(
                rule,
                CREDENTIAL,
                ApiRequest(method="GET", url=f"https://{API_HOST}:{port}/"),
                ssl_context=servers.ssl_context,
                resolve=resolve,
            )

    assert refused.value.reason == "connect_failed"


async def test_a_name_that_does_not_resolve_is_refused(servers: Servers) -> None:
    rule = servers.rule(hosts=("nowhere.example.test",))

    with pytest.raises(BrokerRefusal) as refused:
        await send(
            rule,
            CREDENTIAL,
            ApiRequest(method="GET", url="https://nowhere.example.test/"),
            ssl_context=servers.ssl_context,
            resolve=resolve,
        )

    assert refused.value.reason == "dns_failed"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://api.openai.com/v1/models", "api.openai.com"),
        ("https://API.OpenAI.com./v1/models", "api.openai.com"),
        ("https://api.openai.com:443/v1/models", "api.openai.com"),
        ("https://api.openai.com:8443/v1", "api.openai.com:8443"),
        ("https://[::1]:8443/", "[::1]:8443"),
    ],
)
def test_target_host_names_the_host_as_the_rule_lists_it(url: str, host: str) -> None:
    rule = ApiRule(hosts=("api.openai.com", "api.openai.com:8443", "[::1]:8443"), inject=BEARER)

    assert target_host(rule, ApiRequest(method="GET", url=url)) == host
