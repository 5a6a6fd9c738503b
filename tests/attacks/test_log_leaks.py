"""Issue 9.3 and 9.4: raw values never reach the logs, however the transport escapes them.

Transport loggers print whole messages at DEBUG, where a value with a quote, a
backslash, a newline or non-ASCII (a PEM key, a JSON service-account key)
appears escaped. `serve --local` runs at DEBUG over each transport, releases
such values (`--reveal allow`), and its stderr is searched for every form of
them; a value too short for the redactor must not appear either. Over stdio,
stdout carries nothing but protocol.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from piper_mcp.local.vault import Vault
from tests.cli.conftest import cli_env, piper_home  # noqa: F401
from tests.processes import initialize, mcp_http_servers, serve_local_over_stdio

pytestmark = pytest.mark.anyio

# ASCII letters survive every escaping: an escaped or partial copy of a long canary shows it.
MARKER = "canary"
PEM = (
    "-----BEGIN KEY-----\n"
    f'MIIE"{MARKER}"\\path\u00e9\u043a\u043b\u044e\u0447-7731\n'
    "-----END KEY-----"
)
JSON_KEY = json.dumps({"type": "service_account", "private_key": f'pk-"{MARKER}"\\n-9d2'})
SHORT = 'ñ\n"\\'  # four characters: under the redactor's minimum
CANARIES = {"pem_key": PEM, "json_key": JSON_KEY, "short_key": SHORT}


ESCAPES: tuple[Callable[[str], str], ...] = (
    lambda text: json.dumps(text)[1:-1],  # a JSON-RPC message
    lambda text: json.dumps(text, ensure_ascii=False)[1:-1],
    lambda text: repr(text)[1:-1],  # a pydantic model or dict in a debug line
    lambda text: repr(text.encode())[2:-1],  # a bytes chunk of the stream
)


def forms(secret: str) -> set[str]:
    """Every way a log line could carry `secret`: escaped up to three times over, or base64.

    A streamed tool result is JSON (the text block) in JSON (the message) in a
    bytes repr (the chunk log): three layers.
    """
    found = layer = {secret}
    for _ in range(3):
        layer = {escape(form) for form in layer for escape in ESCAPES}
        found = found | layer
    return found | {base64.b64encode(secret.encode()).decode().rstrip("=")}


def assert_clean(text: str, where: str) -> None:
    marked = MARKER in text
    assert not marked, f"{where} holds a canary, escaped or in part"
    for name, secret in CANARIES.items():
        leaked = sum(form in text for form in forms(secret))
        # Named, never shown: a failing test must not print the canary either.
        assert leaked == 0, f"{where} holds {name} in {leaked} form(s)"


@pytest.fixture
def home(piper_home: Path, cli_env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    vault, _ = Vault.init(piper_home)
    me = vault.local_user_id
    for variable, value in CANARIES.items():
        vault.put_secret(f"secret {variable}", value, owner_user_id=me)
        vault.grant(me, "local-agent", variable, f"secret {variable}")
    vault.close()
    return {**cli_env, "PIPER_MCP_REVEAL": "allow", "PIPER_MCP_LOG_LEVEL": "DEBUG"}


async def reveal_all(client: Client) -> None:
    for variable, value in CANARIES.items():
        result = await client.call_tool("get_secret", {"variable": variable, "mode": "value"})
        assert result.structured_content["value"] == value  # the legitimate flow works
        token = await client.call_tool("get_secret", {"variable": variable})
        assert token.is_error is False


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_debug_logs_over_http_carry_no_value_in_any_encoding(
    home: dict[str, str], transport: str
) -> None:
    with mcp_http_servers(home) as start:
        url = start(transport)
        connection = sse_client(url) if transport == "sse" else url
        async with Client(connection, mode="legacy") as client:  # type: ignore[arg-type]
            await reveal_all(client)
        log = start.logs[url].read_text(encoding="utf-8", errors="replace")  # type: ignore[attr-defined]
    assert "DEBUG" in log  # it really ran at DEBUG
    assert_clean(log, f"stderr over {transport}")


QUERY_TOKENS = {
    "access_token": "qs-access-token-6b1f0c",
    "token": "qs-token-9e42d7",
    "key": "qs-api-key-3a8c51",
}


def test_a_token_in_a_rejected_query_string_is_not_logged(home: dict[str, str]) -> None:
    """Issue 9.4: the access log printed a rejected request's query-string token."""
    with mcp_http_servers(home) as start:
        url = start("streamable-http")
        with httpx.Client(timeout=30) as http:
            for name, value in QUERY_TOKENS.items():
                assert http.get(url, params={name: value}).status_code >= 400
                assert http.post(url, params={name: value}, content=b"{").status_code >= 400
        log = start.logs[url].read_text(encoding="utf-8", errors="replace")  # type: ignore[attr-defined]
    for name, value in QUERY_TOKENS.items():
        leaked = value in log
        assert not leaked, f"stderr holds the {name} query parameter"
    # The access log still reaches stderr, through the redactor (not uvicorn's own handler).
    scrubbed = '"GET /mcp?access_token=[redacted] HTTP/1.1" 4' in log
    assert scrubbed


def test_stdio_stdout_is_protocol_only_and_stderr_is_clean(home: dict[str, str]) -> None:
    messages = [
        initialize("leak-test"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for n, variable in enumerate(CANARIES, start=1):
        arguments = {"variable": variable, "mode": "value"}
        messages.append(
            {
                "jsonrpc": "2.0",
                "id": n,
                "method": "tools/call",
                "params": {"name": "get_secret", "arguments": arguments},
            }
        )
    process = serve_local_over_stdio(home, messages)
    assert process.stdout is not None
    answers = [json.loads(process.stdout.readline()) for _ in CANARIES]
    answers.append(json.loads(process.stdout.readline()))  # the initialize reply comes first
    out, err = process.communicate(timeout=30)
    assert all(answer["jsonrpc"] == "2.0" for answer in answers)
    assert out == ""  # nothing but those answers
    values = {
        a["result"]["structuredContent"]["value"] for a in answers if "structuredContent" in str(a)
    }
    assert values == set(CANARIES.values())
    assert "DEBUG" in err
    assert_clean(err, "stderr over stdio")


def test_a_token_in_a_query_string_to_serve_locals_own_port_is_not_logged(
    home: dict[str, str],
) -> None:
    """Next door to 9.4: `serve --local`'s one port (the Secret Manager read route its
    tokens need) logs a refused request without the query string's token, at DEBUG."""
    messages = [
        initialize("port-prober"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "get_secret", "arguments": {"variable": "pem_key"}},
        },
    ]
    process = serve_local_over_stdio(home, messages)
    assert process.stdout is not None
    process.stdout.readline()  # initialize
    issued = json.loads(process.stdout.readline())["result"]["structuredContent"]
    endpoint, secret = issued["secret_manager_endpoint"], issued["secret_version"]
    assert urlsplit(endpoint).hostname == "127.0.0.1"
    with httpx.Client(timeout=30) as http:
        for name, value in QUERY_TOKENS.items():
            refused = http.get(f"{endpoint}/v1/{secret}:access", params={name: value})
            assert refused.status_code == 401  # a token is only ever a bearer header
    _, err = process.communicate(timeout=30)
    assert "DEBUG" in err
    for name, value in QUERY_TOKENS.items():
        assert value not in err, f"stderr holds the {name} query parameter"
    assert_clean(err, "stderr of serve --local")
