"""Tool arguments that do not fit, said in piper-mcp's words: what was wrong, what to send.

`MCPServer` checks a call's arguments against the tool's input model and, on a
mismatch, answers with pydantic's report: its own jargon, links to
errors.pydantic.dev and the rejected values echoed back. A model reads the tool
error to correct its call, so it gets one sentence per argument instead, built
from the input schema the tool advertises, such as "get_secret: `mode` must be
'token' or 'value', not 'raw'." Arguments a tool does not take are ignored, as
its schema allows (some hosts add a placeholder argument to tools taking none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from piper_mcp.printable import quoted

# How a JSON Schema type is asked for in a sentence.
TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}
PLURAL_TYPE_NAMES = {"string": "strings", "integer": "whole numbers", "number": "numbers"}
SHOWN_LENGTH = 40  # of a rejected value: enough to recognise it, never a wall of text


class ArgumentCheckedServer(MCPServer):
    """An `MCPServer` whose tools answer bad arguments in piper-mcp's words, scrubbed."""

    def __init__(self, *, scrub: Callable[[str], str], **settings: Any) -> None:
        super().__init__(**settings)
        self._scrub = scrub

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # mcp 2.3.0: every tools/call goes through this public method, which raises a
        # failed argument check as a ToolError caused by the ValidationError (not an
        # UnexpectedToolError: that is a crash); the SDK's own handler tells the two
        # apart the same way. Nothing else here depends on how the SDK checks.
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            cause = error.__cause__
            if isinstance(error, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            tools = await self.list_tools()
            schema = next((tool.input_schema for tool in tools if tool.name == name), {})
            raise ToolError(self._scrub(bad_arguments(name, schema, cause))) from cause


def bad_arguments(tool: str, schema: dict[str, Any], error: ValidationError) -> str:
    """One sentence per argument `error` found wrong, saying what to send instead."""
    properties: dict[str, Any] = schema.get("properties", {})
    said: dict[str, str] = {}
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else ""
        if field in said:
            continue
        wanted = properties.get(field, {})
        if problem["type"] == "missing":
            said[field] = f"{tool} needs `{field}`: {expected(wanted, describe_only=True)}."
        else:
            inside = problem["loc"][1:]  # a value inside the argument (a header's)
            where = f" (at {quoted('.'.join(map(str, inside)), SHOWN_LENGTH)})" if inside else ""
            value = rejected_value(problem)
            said[field] = f"{tool}: `{field}` must be {expected(wanted)}, not {value}{where}."
    return " ".join(said.values())


def expected(wanted: dict[str, Any], *, describe_only: bool = False) -> str:
    """What an argument must be, from its schema: its values, or its type and description."""
    if "enum" in wanted:
        return " or ".join(repr(value) for value in wanted["enum"])
    kind = _kind(wanted)
    about = str(wanted.get("description", "")).strip().rstrip(".")
    if not about:
        return kind
    about = about[0].lower() + about[1:] if about[1:2].islower() else about
    return about if describe_only else f"{kind}, {about}"


def _kind(wanted: dict[str, Any]) -> str:
    """The JSON type an argument's schema asks for, in words (`null` left out: it is unset)."""
    if "anyOf" in wanted:
        kinds = [_kind(option) for option in wanted["anyOf"] if option.get("type") != "null"]
        return " or ".join(kinds) or "a valid value"
    values = wanted.get("additionalProperties")
    if wanted.get("type") == "object" and isinstance(values, dict) and values.get("type"):
        return f"an object of {PLURAL_TYPE_NAMES.get(values['type'], 'values')} by name"
    return TYPE_NAMES.get(wanted.get("type", ""), "a valid value")


def rejected_value(problem: ErrorDetails) -> str:
    """The rejected value, short and printable; a list or an object only by its kind."""
    value = problem.get("input")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quoted(value, SHOWN_LENGTH)
    if isinstance(value, float):
        return str(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**SHOWN_LENGTH else "a very large number"
    return "a list" if isinstance(value, list) else "an object"
