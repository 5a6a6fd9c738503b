"""How the user can run piper-mcp again: hints print commands the way this one was run.

A Quickstart that runs `.venv/bin/piper-mcp` without activating the virtual environment
leaves `piper-mcp` off PATH; a hint saying `piper-mcp local grant ...` is then "command
not found". Hints name the program as the user started it, unless `piper-mcp` on PATH
is the same program.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from piper_mcp.home import APP_NAME


def program() -> str:
    """`piper-mcp` when PATH finds this very program, else the path it was started by."""
    started = sys.argv[0] if sys.argv else ""
    if Path(started).parts[-2:] == ("piper_mcp", "__main__.py"):  # python -m piper_mcp
        return f"{shlex.quote(sys.executable)} -m piper_mcp"
    if not Path(started).name.startswith(APP_NAME):  # in-process (tests, an embedding host)
        return APP_NAME
    on_path = shutil.which(APP_NAME)
    if on_path and _same_file(on_path, started):
        return APP_NAME
    return shlex.quote(started)


def command(*words: str) -> str:
    """A runnable command line: `piper-mcp WORDS...` as the user can run it, shell-quoted."""
    return " ".join([program(), *(shlex.quote(word) for word in words)])


# The MCP Inspector release the tests run (tests/e2e/package.json): what hints suggest.
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def inspector_command(home: Path | None) -> str:
    """The Inspector's web UI starting this server: on vault `home`, or the Piper cloud.

    The vault is named: the Inspector starts servers without the shell's PIPER_HOME.
    """
    if home is None:
        settings = "-e PIPER_CLIENT_ID=AGENT_ID -e PIPER_VARIABLES=NAME"
        return f"npx {INSPECTOR} {settings} {command('serve')}"
    return f"npx {INSPECTOR} -e PIPER_HOME={shlex.quote(str(home))} {command('serve', '--local')}"


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def first_steps(agent: str) -> str:
    """What to run in a new vault: store a secret, grant it; two indented lines."""
    secret_set = command("local", "secret", "set", "My OpenAI key")
    grant = command("local", "grant", agent, "openai_api_key", "My OpenAI key")
    return f"  {secret_set}   (asks for the value, hidden)\n  {grant}"
