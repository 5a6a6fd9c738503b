"""`piper-mcp exec` in front of an MCP server that serves streamable HTTP, not stdio.

The wrapped server gets its value in its environment, then a real MCP client reaches
it over HTTP in both protocol eras: exec hands over the process and stays out of the
way, whatever the server speaks.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mcp import Client

from tests.cli.conftest import PROGRAM, Cli

pytestmark = pytest.mark.anyio

VALUE = "ghp_canary-exec-over-http-61d0"
SERVER = str(Path(__file__).with_name("env_report_server.py"))


@pytest.fixture
def wrapped_http_server(cli: Cli, cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    for done in (
        cli("local", "init"),
        cli("local", "secret", "set", "GitHub token", stdin=VALUE),
        cli("local", "grant", "local-agent", "github_token", "GitHub token"),
    ):
        assert done.code == 0, done.err
    port_file = tmp_path / "port"
    wrapping = [PROGRAM, "exec", "--local", "--env", "TOKEN=github_token", "--"]
    server = subprocess.Popen(
        [*wrapping, sys.executable, SERVER, str(port_file)],
        env=cli_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60  # a bound for a broken server, not a measurement
        while time.monotonic() < deadline and server.poll() is None:
            if port_file.exists():
                url = f"http://127.0.0.1:{port_file.read_text()}/mcp"
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.TransportError:
                    pass  # bound, uvicorn not answering yet
            time.sleep(0.1)
        assert server.poll() is None and port_file.exists(), "the wrapped server did not start"
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_a_wrapped_http_server_has_its_value(wrapped_http_server: str, era: str) -> None:
    async with Client(wrapped_http_server, mode=era) as client:  # type: ignore[arg-type]
        result = await client.call_tool("environment", {"digests_of": ["TOKEN"]})
    assert result.structured_content is not None
    assert result.structured_content["sha256"] == {
        "TOKEN": hashlib.sha256(VALUE.encode()).hexdigest()
    }
    assert VALUE not in str(result)
