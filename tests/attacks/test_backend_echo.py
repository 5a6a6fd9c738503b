"""Issue 9.5: a backend (or a proxy) that echoes the request leaks nothing through piper-mcp.

The echo puts the agent's client secret and its agent token into every error
body, code included. Tool errors, list_variables, the resources, the
fix_variable prompt, the audit file and piper://audit must carry neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from piper_mcp.cli import main
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.credentials import CredentialService
from tests.protocol.conftest import text_of

pytestmark = pytest.mark.anyio

CLIENT_SECRET = 'client-secret-"canary"\\é-5b8e1d0c7a9f2346'
# Shaped like an error code, so an echo of it in the `error` field looks like one.
AGENT_TOKEN = "agent_token_canary_3f7d9b1e5a0c2468ace"


def echo_backend(echo: str) -> Starlette:
    """Echoes each request into `error_description`; with `code`, the bearer token into `error`."""

    async def answer(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        said = f"you sent {body} with {dict(request.headers)}"
        if echo != "token-endpoint" and request.url.path == "/piper-token-endpoint":
            return JSONResponse({"access_token": AGENT_TOKEN, "expires_in": 3600})
        code, status = said, 401
        if "resolve" in request.url.path:
            code, status = "mapping_not_found", 404
            if echo == "code":
                code = request.headers.get("authorization", "").removeprefix("Bearer ")
        return JSONResponse({"error": code, "error_description": said}, status_code=status)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST", "GET"])])


def assert_clean(text: str, where: str) -> None:
    for canary in (CLIENT_SECRET, AGENT_TOKEN):
        escaped = json.dumps(canary)[1:-1]
        for form in {canary, escaped, json.dumps(escaped)[1:-1], quote(canary), quote_plus(canary)}:
            found = form in text
            assert not found, f"{where} echoes a credential"


async def everything(client: Client) -> list[str]:
    """What a model and a user can read back; each as text."""
    seen: list[Any] = [await client.call_tool("get_secret", {"variable": "openai_api_key"})]
    seen.append(
        await client.call_tool("get_secret", {"variable": "openai_api_key", "mode": "value"})
    )
    seen.append(await client.call_tool("list_variables", {}))
    seen.append(await client.call_tool("check_link", {}))
    texts = [text_of(result) + json.dumps(result.structured_content) for result in seen]
    for uri in ("piper://variables", "piper://variables/openai_api_key", "piper://audit"):
        read = await client.read_resource(uri)
        texts.append("".join(getattr(part, "text", "") for part in read.contents))
    prompt = await client.get_prompt("fix_variable", {"variable": "openai_api_key"})
    texts.append("".join(message.content.text for message in prompt.messages))  # type: ignore[union-attr]
    return texts


@pytest.mark.parametrize("echo", ["token-endpoint", "functions", "code"])
async def test_an_echoing_backend_leaks_no_client_secret_or_token(
    serve: Callable[[object], str], tmp_path: Path, echo: str
) -> None:
    base = serve(echo_backend(echo))
    piper = AsyncPiperClient(
        "research",
        CLIENT_SECRET,
        piper_link_instance_id="instance-echo",
        token_url=f"{base}/piper-token-endpoint",
        resolve_mapping_url=f"{base}/piper-resolve-variable-mapping",
        get_scoped_url=f"{base}/getscopedgcpcredentials",
        exchange_secret_url=f"{base}/piper-exchange-sts-for-secret",
        enable_env_fallback=False,
    )
    service = CredentialService(piper, lambda: ["openai_api_key"])
    audit = AuditTrail(tmp_path / "audit.jsonl")
    server = build_server(service, audit=audit)
    async with Client(server, mode="legacy") as client:
        texts = await everything(client)
    await piper.aclose()
    assert any("you sent" in text or "openai_api_key" in text for text in texts)
    for n, text in enumerate(texts):
        assert_clean(text, f"output {n}")
    trail = (tmp_path / "audit.jsonl").read_text()
    assert_clean(trail, "the audit file")
    free_text = "you sent" in trail
    assert not free_text  # no backend free text at all, only reason codes
    reasons = {json.loads(line)["reason"] for line in trail.splitlines()}
    assert reasons <= {"mapping_not_found", "auth", "no_consent", "no_elicitation"}, reasons


@pytest.mark.parametrize("echo", ["token-endpoint", "code"])
def test_piper_mcp_check_prints_no_client_secret_or_token(
    serve: Callable[[object], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    echo: str,
) -> None:
    base = serve(echo_backend(echo))
    monkeypatch.setenv("PIPER_HOME", str(tmp_path))
    for name, value in {
        "CLIENT_ID": "research",
        "CLIENT_SECRET": CLIENT_SECRET,
        "INSTANCE_ID": "instance-echo",
        "TOKEN_URL": f"{base}/piper-token-endpoint",
        "RESOLVE_MAPPING_URL": f"{base}/piper-resolve-variable-mapping",
        "GET_SCOPED_URL": f"{base}/getscopedgcpcredentials",
        "EXCHANGE_SECRET_URL": f"{base}/piper-exchange-sts-for-secret",
        "LINK_URL": f"{base}/piper-link-context",
        "ENV_FALLBACK": "false",
        "VARIABLES": "openai_api_key",
    }.items():
        monkeypatch.setenv(f"PIPER_{name}", value)
    for flags in ([], ["--json"]):
        assert main(["check", *flags]) == 1  # the backend refuses: the report says so
        printed = capsys.readouterr()
        assert "FAIL" in printed.out or '"ok": false' in printed.out
        assert_clean(printed.out + printed.err, f"piper-mcp check {' '.join(flags)}")
