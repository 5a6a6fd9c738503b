"""The MCP face of piper-mcp: tools, resources and prompts over the Piper client."""
