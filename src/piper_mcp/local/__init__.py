"""A self-hosted, Piper-compatible backend: the wire protocol, Piper Link and Secret Manager.

Shares nothing with `piper_mcp.piper` but the protocol's data shapes.
"""

from piper_mcp.local.server import LocalBackend
from piper_mcp.local.vault import Vault

__all__ = ["LocalBackend", "Vault"]
