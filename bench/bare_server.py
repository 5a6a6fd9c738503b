"""The floor: a bare MCPServer with one trivial tool, over stdio (what piper-mcp is measured against)."""

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="bare")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    server.run("stdio")
