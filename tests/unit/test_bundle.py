from __future__ import annotations

from piper_mcp.bundle import forget_unfilled_fields


def test_unfilled_bundle_fields_are_not_settings_but_an_unexpanded_vault_is_kept() -> None:
    environ = {
        "PIPER_CLIENT_SECRET": "${user_config.client_secret}",
        "PIPER_VARIABLES": "${user_config.variables}",
        "PIPER_CLIENT_ID": "research-bot",
        "PIPER_HOME": "${user_config.piper_home}",  # refused later, with advice
        "OTHER": "${user_config.other}",  # not ours to touch
        "PIPER_MCP_REVEAL": "${HOME}",  # another host's variable: refused as it is
    }
    assert forget_unfilled_fields(environ) == ["PIPER_CLIENT_SECRET", "PIPER_VARIABLES"]
    assert environ == {
        "PIPER_CLIENT_ID": "research-bot",
        "PIPER_HOME": "${user_config.piper_home}",
        "OTHER": "${user_config.other}",
        "PIPER_MCP_REVEAL": "${HOME}",
    }
