"""piper-mcp: user-approved, short-lived credentials from Piper for AI agents and LLM hosts."""

__version__ = "0.1.0"
