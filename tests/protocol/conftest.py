"""The MCP server in-process, over a real local Piper on loopback, in both protocol eras."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID

DECLARED = ["OpenAI API Key", "database_url", "slack_token"]


def wire(result: Any) -> dict[str, Any]:
    """What the client received, as the JSON on the wire (minus per-server metadata)."""
    data: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.pop("_meta", None)
    data.pop("resultType", None)
    return data


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def make_server(
    client: AsyncPiperClient,
    policy: RevealPolicy | None = None,
    declared: list[str] = DECLARED,
    *,
    transport: str = "stdio",
) -> MCPServer:
    """The MCP server over `client`, as served on `transport` (what it decides by it)."""
    service = CredentialService(
        client,
        lambda: list(declared),
        policy=policy,
    )
    return build_server(service, transport=transport)


@pytest.fixture(params=["legacy", "auto"])
def era(request: pytest.FixtureRequest) -> str:
    """The handshake era (initialize) and the stateless 2026-07-28 era (discover)."""
    return str(request.param)


@pytest.fixture
def piper_client(piper: LocalBackend) -> AsyncPiperClient:
    """The research agent, secretless (v2), pointed at Ada's local Piper."""
    return AsyncPiperClient(AGENT_ID, **piper.client_settings())


@pytest.fixture
async def mcp(piper_client: AsyncPiperClient, era: str) -> AsyncIterator[Client]:
    async with Client(make_server(piper_client), mode=era) as client:  # type: ignore[arg-type]
        yield client
    await piper_client.aclose()


def structured(result: Any) -> dict[str, Any]:
    assert result.is_error is False, text_of(result)
    data: dict[str, Any] = result.structured_content
    assert json.loads(text_of(result)) == data  # the text block mirrors it for older clients
    return data
