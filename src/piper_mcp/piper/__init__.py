"""The internal Piper client: speaks Piper's wire protocol; knows nothing of MCP.

from piper_mcp.piper import PiperClient
client = PiperClient(client_id="...", client_secret="...")
result = client.get_secret("openai_api_key")   # result["source"], result["value"], ...
"""

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
