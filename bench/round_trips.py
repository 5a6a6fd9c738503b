"""How many Piper round trips `get_secret` costs: cold, and 100 concurrent calls for 5 variables.

The backend answers after 50 ms, as a remote Piper would, so the 100 calls are truly
concurrent (on an idle loopback a flight can land before the last call of its variable
is sent, which then starts a new one: that is a sequence, not concurrency).

Counted at the local backend, through the MCP server (in-process client),
protocol v1 with the agent token already cached, STS reuse off
(`PIPER_REVOCATION_WINDOW=0`) so that only coalescing can save a call.

    python -m bench.round_trips
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench import BENCH_SECRET
from piper_mcp.local.server_thread import LocalBackend, ServerThread, Site
from piper_mcp.local.vault import Vault
from piper_mcp.network import bind, url_of
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.credentials import CredentialService

VARIABLES = [f"variable_{n}" for n in range(5)]
FUNCTIONS = ("piper-resolve-variable-mapping", "getscopedgcpcredentials")


LATENCY = 0.05  # seconds: a remote Piper's round trip


def far_away(app: Any) -> Any:
    """ASGI: `app`, answering `LATENCY` later."""

    async def delayed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await anyio.sleep(LATENCY)
        await app(scope, receive, send)

    return delayed


async def count(piper: LocalBackend) -> dict[str, Any]:
    sock = bind("127.0.0.1", 0)
    front = ServerThread([Site(far_away(piper.app.asgi), sock)])
    front.start()
    settings = {
        key: value.replace(piper.base_url, url_of(sock)) if isinstance(value, str) else value
        for key, value in piper.client_settings().items()
    }
    try:
        return await count_through(piper, settings)
    finally:
        front.stop()


async def count_through(piper: LocalBackend, settings: dict[str, Any]) -> dict[str, Any]:
    client = AsyncPiperClient("bench-agent", BENCH_SECRET, **settings)
    server = build_server(CredentialService(client, lambda: VARIABLES))
    async with Client(server, mode="legacy") as mcp:
        await mcp.call_tool("get_secret", {"variable": VARIABLES[0]})  # agent tokens cached
        before = {name: piper.app.calls[name] for name in FUNCTIONS}
        await mcp.call_tool("get_secret", {"variable": VARIABLES[1]})
        cold = {name: piper.app.calls[name] - before[name] for name in FUNCTIONS}
        before = {name: piper.app.calls[name] for name in FUNCTIONS}
        async with anyio.create_task_group() as group:
            for n in range(100):
                group.start_soon(mcp.call_tool, "get_secret", {"variable": VARIABLES[n % 5]})
        burst = {name: piper.app.calls[name] - before[name] for name in FUNCTIONS}
    await client.aclose()
    return {
        "cold_round_trips": sum(cold.values()),
        "burst_resolve_calls": burst[FUNCTIONS[0]],
        "burst_scoped_calls": burst[FUNCTIONS[1]],
    }


def run() -> dict[str, Any]:
    os.environ["PIPER_REVOCATION_WINDOW"] = "0"
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        vault, _ = Vault.init(Path(folder) / "vault")
        me = vault.local_user_id
        vault.add_agent("bench-agent", BENCH_SECRET, owner_user_id=me, variables=VARIABLES)
        for name in VARIABLES:
            vault.put_secret(f"secret {name}", "x" * 40, owner_user_id=me)
            vault.grant(me, "bench-agent", name, f"secret {name}")
        with LocalBackend(vault, instance_id=vault.local_instance_id) as piper:
            return anyio.run(count, piper)


def table(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| measure | counted | target |",
            "|---|---|---|",
            f"| Piper round trips for a cold get_secret (agent token cached) | "
            f"{results['cold_round_trips']} | exactly 2 |",
            f"| resolve calls for 100 concurrent get_secret over 5 variables | "
            f"{results['burst_resolve_calls']} | ≤ 5 |",
            f"| scoped calls for the same burst | {results['burst_scoped_calls']} | ≤ 5 |",
        ]
    )


if __name__ == "__main__":
    print(table(run()))
