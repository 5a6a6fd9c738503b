"""What a brokered call costs over calling the API directly (A B A B, medians).

One HTTPS server on loopback (a trustme certificate, uvicorn in a thread) answers a
small JSON body when the credential is right. Alternating, per request:

- direct: `httpx.AsyncClient` opened for the request, `GET` with the key in the
  `Authorization` header, as a program that holds the key would call the API;
- brokered: `piper_mcp.broker.call.send` with a rule for that host, which checks the
  request, resolves and checks the address, attaches the key, reads and scrubs the
  answer: what `call_api` does after consent, without the MCP round trip;
- the tool: `call_api` itself, from an in-process MCP client, over `serve --local`'s
  composition (the key read from a local vault through its grant for every call,
  audited), reveal policy `allow`.

All open a new connection (TCP and TLS) per request, as `call_api` does.

    python -m bench.brokered_call              # 7 rounds of 100 requests each way
    python -m bench.brokered_call --rounds 11
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import trustme
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from piper_mcp.broker.call import ApiRequest, send
from piper_mcp.broker.rules import ApiRule
from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.server_thread import ServerThread, Site, Tls
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.brokered_calls import BrokeredCalls
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.policy import RevealPolicy

KEY = "sk-bench-brokered-0123456789abcdef"
TARGET = 1.30


def api() -> Starlette:
    async def needs_key(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": "wrong key"}, status_code=401)
        return JSONResponse({"ok": True, "items": list(range(20))})

    return Starlette(routes=[Route("/v1/items", needs_key)])


async def per_request_ms(call: Callable[[], Awaitable[int]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        if await call() != 200:
            raise RuntimeError("the API refused a benchmark request")
    return 1000 * (time.perf_counter() - started) / count


def run(rounds: int = 7, requests: int = 100) -> dict[str, Any]:
    """Per-request medians (ms) of the three ways and their ratios to the direct one."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per in-process request
    with tempfile.TemporaryDirectory(prefix="piper-bench-tls-") as folder:
        home = Path(folder) / "vault"
        vault, _ = Vault.init(home)
        vault.put_secret("bench key", KEY, owner_user_id=vault.local_user_id)
        vault.grant(vault.local_user_id, DEFAULT_AGENT, "api_key", "bench key")
        vault.close()
        os.environ["PIPER_HOME"] = str(home)
        authority = trustme.CA()
        served = Path(folder) / "server.pem"
        authority.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(served))
        context = ssl.create_default_context()
        authority.configure_trust(context)
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        thread = ServerThread([Site(api(), sock, Tls(served, served))])
        thread.start()
        local = LocalPiper(DEFAULT_AGENT).open()
        try:
            return anyio.run(measure, port, context, local, Path(folder), rounds, requests)
        finally:
            local.stop()
            thread.stop()


async def measure(
    port: int,
    context: ssl.SSLContext,
    local: LocalPiper,
    folder: Path,
    rounds: int,
    requests: int,
) -> dict[str, Any]:
    url = f"https://localhost:{port}/v1/items"
    rule = ApiRule(hosts=(f"localhost:{port}",), allow_private=True)
    client = AsyncPiperClient.from_settings(local.settings, http_client=local.http_client())
    service = CredentialService(
        client, local.declared, policy=RevealPolicy("allow"), grants=local.grants
    )
    calls = BrokeredCalls(service, {"api_key": rule}, ssl_context=context)
    server = build_server(service, calls=calls, audit=AuditTrail(folder / "audit.jsonl"))

    async def direct() -> int:
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {KEY}"})
            return response.status_code

    async def brokered() -> int:
        answer = await send(rule, KEY, ApiRequest(method="GET", url=url), ssl_context=context)
        return answer.status

    async with Client(server, mode="legacy") as mcp:

        async def tool() -> int:
            result = await mcp.call_tool("call_api", {"variable": "api_key", "url": url})
            return int(result.structured_content["status"]) if result.structured_content else 0

        ways: dict[str, Callable[[], Awaitable[int]]] = {
            "direct": direct,
            "brokered": brokered,
            "tool": tool,
        }
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for way in ways.values():  # warm every path up
            await per_request_ms(way, 10)
        for _ in range(rounds):
            for name, way in ways.items():
                samples[name].append(await per_request_ms(way, requests))
    await client.aclose()
    medians = {name: statistics.median(taken) for name, taken in samples.items()}
    return {
        "rounds": rounds,
        "requests": requests,
        **{f"{name}_ms": round(ms, 2) for name, ms in medians.items()},
        "ratio": round(medians["brokered"] / medians["direct"], 2),
        "tool_ratio": round(medians["tool"] / medians["direct"], 2),
        "target": TARGET,
    }


def table(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| per HTTPS request (ms), median of "
            f"{results['rounds']} x {results['requests']} | time | ratio to direct | target |",
            "|---|---|---|---|",
            f"| direct: httpx with the key | {results['direct_ms']} | 1x | |",
            f"| brokered: `call_api`'s engine (`broker.call.send`) | {results['brokered_ms']} | "
            f"{results['ratio']}x | ≤ {results['target']}x |",
            f"| `call_api` over MCP (in-process client, local vault, audited) | "
            f"{results['tool_ms']} | {results['tool_ratio']}x | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument("--requests", type=int, default=100, help="requests per round (100)")
    arguments = parser.parse_args()
    print(table(run(arguments.rounds, arguments.requests)))


if __name__ == "__main__":
    main()
