"""The MCP Inspector (a client nobody here wrote) drives piper-mcp through mcp.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, VALUE


def inspector(env: dict[str, str], *args: str) -> tuple[int, Any, str]:
    done = subprocess.run(
        ["inspector", "--cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    try:
        output = json.loads(done.stdout)
    except ValueError:
        output = done.stdout
    return done.returncode, output, done.stderr


def local_server(env: dict[str, str], era: str, *args: str) -> tuple[int, Any, str]:
    return inspector(
        env,
        "--config",
        "mcp.json",
        "--server",
        "piper-local",
        "--protocol-era",
        era,
        "-e",
        f"PIPER_HOME={env['PIPER_HOME']}",
        *args,
    )


@pytest.mark.parametrize("era", ["legacy", "auto"])
def test_stdio_lists_portable_tool_schemas(node_env: dict[str, str], era: str) -> None:
    code, listed, stderr = local_server(node_env, era, "--method", "tools/list", "--strict")
    assert code == 0, stderr
    assert [tool["name"] for tool in listed["tools"]] == [
        "get_secret",
        "call_api",
        "check_link",
        "list_variables",
    ]


@pytest.mark.parametrize("era", ["legacy", "auto"])
def test_stdio_calls_get_secret(node_env: dict[str, str], era: str) -> None:
    code, called, stderr = local_server(
        node_env,
        era,
        "--method",
        "tools/call",
        "--tool-name",
        "get_secret",
        "--tool-arg",
        "variable=openai_api_key",
        "--format",
        "json",
    )
    assert code == 0, stderr
    result = called["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["source"] == "piper_sts"
    assert VALUE not in json.dumps(called)


def test_stdio_refusal_is_a_tool_error(node_env: dict[str, str]) -> None:
    code, called, _ = local_server(
        node_env,
        "legacy",
        "--method",
        "tools/call",
        "--tool-name",
        "get_secret",
        "--tool-arg",
        "variable=PIPER_CLIENT_SECRET",
        "--format",
        "json",
    )
    assert code == 5  # the Inspector's exit code for a result with isError
    assert "not a variable this agent declares" in called["result"]["content"][0]["text"]


def test_stdio_reads_resources_and_gets_the_prompt(node_env: dict[str, str]) -> None:
    code, read, stderr = local_server(
        node_env, "legacy", "--method", "resources/read", "--uri", "piper://variables"
    )
    assert code == 0, stderr
    variables = json.loads(read["contents"][0]["text"])["variables"]
    assert [(v["variable"], v["source"]) for v in variables] == [("openai_api_key", "piper")]
    code, prompt, stderr = local_server(
        node_env,
        "legacy",
        "--method",
        "prompts/get",
        "--prompt-name",
        "fix_variable",
        "--prompt-args",
        "variable=openai_api_key",
    )
    assert code == 0, stderr
    assert "already granted" in prompt["messages"][0]["content"]["text"]


@pytest.mark.parametrize("era", ["legacy", "auto"])
def test_streamable_http_through_the_mcp_json_entry(
    shared_http_server: tuple[dict[str, str], str], tmp_path: Path, era: str
) -> None:
    """mcp.json's `piper-http` entry, with only its port changed to the test server's."""
    node_env, url = shared_http_server
    config = json.loads((ROOT / "mcp.json").read_text())
    entry = config["mcpServers"]["piper-http"]
    assert entry["url"] == "http://127.0.0.1:8000/mcp"
    entry["url"] = url
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    code, listed, stderr = inspector(
        node_env,
        "--config",
        str(path),
        "--server",
        "piper-http",
        "--protocol-era",
        era,
        "--method",
        "tools/list",
    )
    assert code == 0, stderr
    assert len(listed["tools"]) == 4
    code, called, stderr = inspector(
        node_env,
        "--config",
        str(path),
        "--server",
        "piper-http",
        "--protocol-era",
        era,
        "--method",
        "tools/call",
        "--tool-name",
        "get_secret",
        "--tool-arg",
        "variable=openai_api_key",
        "--format",
        "json",
    )
    assert code == 0, stderr
    assert called["result"]["structuredContent"]["source"] == "piper_sts"


def test_the_local_host_example_config_works(node_env: dict[str, str]) -> None:
    code, listed, stderr = inspector(
        node_env,
        "--config",
        "examples/hosts/claude_desktop_config.json",
        "--server",
        "piper",
        "-e",
        f"PIPER_HOME={node_env['PIPER_HOME']}",
        "--method",
        "tools/list",
    )
    assert code == 0, stderr
    assert len(listed["tools"]) == 4
