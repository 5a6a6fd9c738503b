"""Settings an MCP Bundle host leaves unfilled.

An optional `user_config` field the user left empty reaches the server as the literal
text `${user_config.NAME}` (the reference `mcpb` host keeps a variable it has no value
for). For piper-mcp that means "not set": the bundle's cloud fields when it serves the
local vault, or the client secret of a secretless cloud agent. PIPER_HOME is the
exception: an unexpanded vault folder is refused with advice, never quietly replaced
by the default vault.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping

UNFILLED = re.compile(r"\$\{user_config\.[\w-]+\}")
KEPT = {"PIPER_HOME"}


def forget_unfilled_fields(environ: MutableMapping[str, str]) -> list[str]:
    """Remove PIPER_* settings whose value is an unfilled bundle field; their names."""
    unfilled = [
        name
        for name, value in environ.items()
        if name.startswith("PIPER_") and name not in KEPT and UNFILLED.fullmatch(value)
    ]
    for name in unfilled:
        del environ[name]
    return unfilled
