"""A self-hosted, Piper-compatible backend: the wire protocol, Piper Link and Secret Manager.

Shares nothing with `piper_mcp.piper` but the protocol's data shapes (and its
name rules). `server.LocalBackend` runs it; `vault.Vault` is what it serves.
"""
