"""Fault injection: what `get_secret` does when Piper or Link misbehave.

A fault layer sits between piper-mcp and the real local backend (and Link)
and breaks exactly one thing per scenario. For each: the outcome (recovered,
or a tool error naming the cause), whether the server still serves, and
whether any canary value leaked into what the model saw.

    python -m bench.faults
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from starlette.types import Receive, Scope, Send

from bench import BENCH_SECRET
from piper_mcp.local.server_thread import LocalBackend, ServerThread, Site
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind, url_of
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.credentials import CredentialService

CANARY = "sk-canary-fault-value-77"
RESOLVE = "/piper-resolve-variable-mapping"
Fault = Callable[[Scope, Receive, Send], Awaitable[bool]]  # True: the fault answered


class FaultLayer:
    """ASGI: apply `fault` to matching requests, else pass through to the real backend."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.fault: Fault | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fault is not None
            and scope["type"] == "http"
            and await self.fault(scope, receive, send)
        ):
            return
        await self.app(scope, receive, send)


def answer(
    status: int,
    body: bytes,
    *,
    times: int = 1_000_000,
    path: str = RESOLVE,
    headers: list[tuple[bytes, bytes]] | None = None,
    delay: float = 0,
) -> Fault:
    left = [times]

    async def fault(scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["path"] != path or left[0] <= 0:
            return False
        left[0] -= 1
        await asyncio.sleep(delay)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True

    return fault


def reset_mid_body(times: int = 1) -> Fault:
    left = [times]

    async def fault(scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["path"] != RESOLVE or left[0] <= 0:
            return False
        left[0] -= 1
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.body", "body": b'{"credentialId":', "more_body": True})
        raise ConnectionResetError("fault: reset mid-body")

    return fault


def closed_port() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    sock = bind("127.0.0.1", 0)
    url = url_of(sock)
    sock.close()
    return url


async def scenario(
    name: str,
    service: CredentialService,
    layer: FaultLayer,
    link: FaultLayer,
    setup: Callable[[], None],
) -> dict[str, Any]:
    setup()
    async with Client(build_server(service), mode="legacy") as mcp:
        result = await mcp.call_tool("get_secret", {"variable": "openai_api_key"})
        layer.fault = link.fault = None
        again = await mcp.call_tool("get_secret", {"variable": "openai_api_key"})
        still = await mcp.call_tool("list_variables", {})
    text = json.dumps([r.model_dump(mode="json") for r in (result, again, still)])
    cause = ""
    if result.is_error:
        cause = result.content[0].text.split("No credential for 'openai_api_key': ")[-1]  # type: ignore[union-attr]
    return {
        "scenario": name,
        "outcome": "tool error" if result.is_error else "recovered",
        "cause": cause[:150],
        "next_call": "tool error" if again.is_error else "ok",
        "still_serving": not still.is_error,
        "leaked": CANARY in text,
    }


async def run_all(
    piper: LocalBackend, api: str, link_url: str, layer: FaultLayer, link: FaultLayer
) -> list[dict[str, Any]]:
    def service(base: str = api) -> CredentialService:
        settings = {**piper.client_settings(), "piper_link_service_url": link_url}
        for key in ("token_url", "resolve_mapping_url", "get_scoped_url", "exchange_secret_url"):
            settings[key] = settings[key].replace(piper.base_url, base)
        client = AsyncPiperClient("bench-agent", BENCH_SECRET, **settings)  # protocol v1
        return CredentialService(client, lambda: ["openai_api_key"])

    def fault(target: FaultLayer, injected: Fault) -> Callable[[], None]:
        return lambda: setattr(target, "fault", injected)

    vault = piper.vault
    user = vault.local_user_id
    scenarios: list[tuple[str, Callable[[], None]]] = [
        ("backend answers 500", fault(layer, answer(500, b'{"error": "internal"}'))),
        ("503, then OK", fault(layer, answer(503, b'{"error": "busy"}', times=1))),
        (
            "429 with Retry-After: 0.3, then OK",
            fault(layer, answer(429, b"{}", times=1, headers=[(b"retry-after", b"0.3")])),
        ),
        (
            "slower than the timeout (PIPER_RESOLVE_TIMEOUT=0.3)",
            fault(layer, answer(200, b'{"credentialId": "x"}', delay=2)),
        ),
        ("malformed JSON", fault(layer, answer(200, b"{not json"))),
        ("wrong shape", fault(layer, answer(200, b'{"credential": 1}'))),
        ("connection reset mid-body, once", fault(layer, reset_mid_body())),
        ("Piper Link down", fault(link, answer(503, b"", path="/piper-link-context"))),
        (
            "Piper Link flapping (down, then up)",
            fault(link, answer(503, b"", times=1, path="/piper-link-context")),
        ),
        ("agent token expired between calls", piper.tokens.revoke_all),
        ("grant revoked mid-run", lambda: vault.revoke(user, "bench-agent", "openai_api_key")),
        ("backend down (connection refused)", lambda: None),
    ]
    rows = []
    for name, setup in scenarios:
        if name.startswith("slower than the timeout"):
            os.environ["PIPER_RESOLVE_TIMEOUT"] = "0.3"
        base = closed_port() if name.startswith("backend down") else api
        rows.append(await scenario(name, service(base), layer, link, setup))
        os.environ.pop("PIPER_RESOLVE_TIMEOUT", None)
        if name == "grant revoked mid-run":
            vault.grant(user, "bench-agent", "openai_api_key", "canary")
    return rows


def run() -> list[dict[str, Any]]:
    os.environ["PIPER_REVOCATION_WINDOW"] = "0"
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        vault, _ = Vault.init(Path(folder) / "vault")
        me = vault.local_user_id
        vault.add_agent("bench-agent", BENCH_SECRET, owner_user_id=me, variables=[])
        vault.put_secret("canary", CANARY, owner_user_id=me)
        vault.grant(me, "bench-agent", "openai_api_key", "canary")
        piper = LocalBackend(vault, instance_id=vault.local_instance_id).start()
        from piper_mcp.local.link import link_app

        layer, link = FaultLayer(piper.app.asgi), FaultLayer(link_app(vault.local_instance_id))
        sites = [Site(layer, bind("127.0.0.1", 0)), Site(link, bind("127.0.0.1", 0))]
        front = ServerThread(sites)
        front.start()
        try:
            return anyio.run(
                run_all,
                piper,
                url_of(sites[0].sock),
                url_of(sites[1].sock) + "/piper-link-context",
                layer,
                link,
            )
        finally:
            front.stop()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | get_secret | cause given to the model | next call | still serving | leaked |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['outcome']} | {row['cause'] or '-'} | "
            f"{row['next_call']} | {'yes' if row['still_serving'] else 'NO'} | "
            f"{'YES' if row['leaked'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
