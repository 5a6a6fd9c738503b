"""The floor piper-mcp is measured against: a bare MCPServer with one trivial tool, on stdio."""

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="bare")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    server.run("stdio")
