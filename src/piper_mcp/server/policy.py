"""The reveal policy: whether a raw secret value may reach the model.

`ask` (default): the user is asked through MCP elicitation; `allow`: the
operator opted in; `deny`: STS tokens only. Per-variable overrides win.
It governs raw values only (Piper's raw exchange, the environment, the local
file); an STS token is what Piper grants and needs no prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from piper_mcp.piper.names import normalize_variable_name

Reveal = Literal["ask", "allow", "deny"]


class RevealPolicy:
    def __init__(self, default: Reveal = "ask", overrides: Mapping[str, Reveal] | None = None):
        self.default = default
        self._overrides = {
            normalize_variable_name(name): rule for name, rule in (overrides or {}).items()
        }

    def for_variable(self, name: str) -> Reveal:
        return self._overrides.get(normalize_variable_name(name), self.default)
