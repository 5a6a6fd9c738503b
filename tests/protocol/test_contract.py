"""The public contract: tools/list (snapshot), resources, completion and the prompt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.types import PromptReference, ResourceTemplateReference

from tests.conftest import AGENT_ID, INSTANCE_ID
from tests.protocol.conftest import wire

pytestmark = pytest.mark.anyio

SNAPSHOT = Path(__file__).parent / "snapshots" / "list_tools.json"


async def test_tools_list_matches_the_committed_contract(mcp: Client) -> None:
    """A change to a tool's name, schema, annotations or description is a visible diff.

    Regenerate with `UPDATE_SNAPSHOTS=1 python -m pytest tests/protocol` and review it.
    """
    listed = wire(await mcp.list_tools())
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(listed, indent=2, ensure_ascii=False) + "\n")
    assert listed == json.loads(SNAPSHOT.read_text())
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert list(tools) == ["get_secret", "call_api", "check_link", "list_variables"]
    assert tools["get_secret"]["inputSchema"]["required"] == ["variable"]
    assert set(tools["get_secret"]["inputSchema"]["properties"]) == {"variable", "mode"}
    assert all("outputSchema" in tool and "annotations" in tool for tool in tools.values())


async def test_resources_are_listed_with_the_variable_template(mcp: Client) -> None:
    resources = wire(await mcp.list_resources())["resources"]
    assert [(r["uri"], r["mimeType"]) for r in resources] == [
        ("piper://link", "application/json"),
        ("piper://variables", "application/json"),
        ("piper://audit", "application/json"),
    ]
    templates = wire(await mcp.list_resource_templates())["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["piper://variables/{name}"]


async def read_json(mcp: Client, uri: str) -> Any:
    [content] = (await mcp.read_resource(uri)).contents
    assert content.mime_type == "application/json"
    return json.loads(content.text)  # type: ignore[union-attr]


async def test_resources_carry_metadata_only(mcp: Client) -> None:
    link = await read_json(mcp, "piper://link")
    assert link["context"] == "piper_link" and INSTANCE_ID not in json.dumps(link)
    variables = await read_json(mcp, "piper://variables")
    assert [v["source"] for v in variables["variables"]] == ["piper", "piper", "missing"]
    one = await read_json(mcp, "piper://variables/database_url")
    assert one["variable"] == "database_url" and one["source"] == "piper"
    assert "piper-sts-" not in json.dumps([link, variables, one])


async def test_an_undeclared_variable_resource_is_not_found(mcp: Client) -> None:
    with pytest.raises(MCPError) as caught:
        await mcp.read_resource("piper://variables/PATH")
    assert caught.value.error.code == -32602
    assert "not a variable this agent declares" in caught.value.error.message


@pytest.mark.parametrize(
    ("ref", "argument", "partial", "expected"),
    [
        (ResourceTemplateReference(uri="piper://variables/{name}"), "name", "", None),
        (ResourceTemplateReference(uri="piper://variables/{name}"), "name", "d", ["database_url"]),
        (PromptReference(name="fix_variable"), "variable", "OPEN", ["OpenAI API Key"]),
        (ResourceTemplateReference(uri="piper://other/{x}"), "x", "", []),
    ],
)
async def test_variable_names_complete(
    mcp: Client, ref: Any, argument: str, partial: str, expected: list[str] | None
) -> None:
    result = await mcp.complete(ref, {"name": argument, "value": partial})
    everything = ["OpenAI API Key", "database_url", "slack_token"]
    assert result.completion.values == (everything if expected is None else expected)


async def test_the_fix_prompt_walks_through_a_missing_grant(mcp: Client) -> None:
    prompts = wire(await mcp.list_prompts())["prompts"]
    assert [(p["name"], [a["name"] for a in p["arguments"]]) for p in prompts] == [
        ("fix_variable", ["variable"])
    ]
    result = await mcp.get_prompt("fix_variable", {"variable": "slack_token"})
    [message] = result.messages
    text = message.content.text  # type: ignore[union-attr]
    assert message.role == "user"
    assert "make the Piper variable 'slack_token' available" in text
    assert f"client={AGENT_ID}&variable=slack_token" in text
    assert "Then call list_variables" in text


async def test_the_fix_prompt_for_a_granted_variable_says_so(mcp: Client) -> None:
    result = await mcp.get_prompt("fix_variable", {"variable": "database_url"})
    assert "already granted" in result.messages[0].content.text  # type: ignore[union-attr]
