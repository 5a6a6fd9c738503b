"""An agent that gets a credential through MCP and reads the secret with it.

It starts `piper-mcp serve --local` over stdio (as a desktop host would),
calls `get_secret`, and reads the secret from Secret Manager with the STS
token it got, the way any Google API client would.

    python examples/mcp_agent.py openai_api_key
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from google.cloud import secretmanager
from google.oauth2.credentials import Credentials
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment


def read_with_token(credential: dict[str, Any]) -> str:
    endpoint = credential["secret_manager_endpoint"]  # None: Google's own
    client = secretmanager.SecretManagerServiceClient(
        transport="rest",
        credentials=Credentials(token=credential["token"]),
        client_options={"api_endpoint": endpoint} if endpoint else None,
    )
    response = client.access_secret_version(request={"name": credential["secret_version"]})
    return response.payload.data.decode()


async def main(variable: str) -> int:
    # The SDK starts servers with a minimal environment; hand on piper-mcp's own settings.
    env = get_default_environment() | {
        name: value for name, value in os.environ.items() if name.startswith("PIPER_")
    }
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=env
    )
    async with Client(server) as mcp:
        result = await mcp.call_tool("get_secret", {"variable": variable})
        if result.is_error:
            print(f"piper-mcp said: {result.content[0].text}")  # type: ignore[union-attr]
            return 1
        credential = result.structured_content or {}
        print(
            f"Got a {credential['source']} token for {variable!r}, "
            f"expires at {credential['expires_at']}"
        )
        # A local Piper lives as long as its server: read while it runs.
        secret = await anyio.to_thread.run_sync(read_with_token, credential)
    print(f"Read the secret with it: {secret[:3]}… ({len(secret)} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "openai_api_key"))
