"""Brokered calls: HTTPS requests to operator-approved APIs with credentials the model never sees.

`rules` says where a credential may go, `call` checks and sends one request,
`transport` connects only to checked addresses, `answer` and `scrub` shape what
comes back. No MCP here: `piper_mcp.server.brokered_calls` wires it to the tool.
"""
