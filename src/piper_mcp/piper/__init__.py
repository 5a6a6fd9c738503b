"""The internal Piper client: speaks Piper's wire protocol; knows nothing of MCP.

from piper_mcp.piper import PiperClient
client = PiperClient(client_id="...", client_secret="...")
result = client.get_secret("openai_api_key")   # result["source"], result["value"], ...

Each name below is imported on first use (PEP 562): a submodule (`protocol`, `errors`,
`names`) imports without the client, and with it httpx and pydantic-settings, which a
command that only reads a vault (`piper-mcp exec --local`, `--version`) never needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from piper_mcp.piper.client import AsyncPiperClient, VariableSource, load_settings
    from piper_mcp.piper.errors import (
        PiperAuthError,
        PiperBackendError,
        PiperConfigError,
        PiperError,
        PiperForbiddenError,
        PiperGrantNeededError,
        PiperLinkNeededError,
        PiperRawSecretExchangeError,
        PiperVariableNameError,
    )
    from piper_mcp.piper.link import LinkProbe
    from piper_mcp.piper.names import env_var_name, normalize_variable_name
    from piper_mcp.piper.result import SecretResult
    from piper_mcp.piper.settings import PiperSettings
    from piper_mcp.piper.sync import PiperClient

# Each public name, and the submodule that defines it.
_HOMES = {
    "AsyncPiperClient": "client",
    "VariableSource": "client",
    "load_settings": "client",
    "PiperAuthError": "errors",
    "PiperBackendError": "errors",
    "PiperConfigError": "errors",
    "PiperError": "errors",
    "PiperForbiddenError": "errors",
    "PiperGrantNeededError": "errors",
    "PiperLinkNeededError": "errors",
    "PiperRawSecretExchangeError": "errors",
    "PiperVariableNameError": "errors",
    "LinkProbe": "link",
    "env_var_name": "names",
    "normalize_variable_name": "names",
    "SecretResult": "result",
    "PiperSettings": "settings",
    "PiperClient": "sync",
}

__all__ = [
    "AsyncPiperClient",
    "LinkProbe",
    "PiperAuthError",
    "PiperBackendError",
    "PiperClient",
    "PiperConfigError",
    "PiperError",
    "PiperForbiddenError",
    "PiperGrantNeededError",
    "PiperLinkNeededError",
    "PiperRawSecretExchangeError",
    "PiperSettings",
    "PiperVariableNameError",
    "SecretResult",
    "VariableSource",
    "env_var_name",
    "load_settings",
    "normalize_variable_name",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        # An AttributeError, not a KeyError: `from piper_mcp.piper import protocol` then
        # imports the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # asked once: later lookups find it without this function
    return value
