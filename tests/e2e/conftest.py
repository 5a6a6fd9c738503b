"""Outside programs from npm: the MCP Inspector CLI, the conformance suite, Claude Code, mcpb.

The pinned packages (package.json / package-lock.json here, Node 22 among
them) are installed by the first test that needs them, so README's one test
command is all CI runs. They need `npm` on the machine and the npm registry.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from piper_mcp.local.vault import Vault
from tests.processes import mcp_http_servers

E2E = Path(__file__).parent
ROOT = E2E.parents[1]
BIN = E2E / "node_modules" / ".bin"
VALUE = "sk-canary-e2e-value-8c3d"
NODE_TOOLS = ("inspector", "conformance", "claude", "mcpb")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here is `e2e`: `pytest -m "not e2e"` is the suite without Node and npm."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def node_tools() -> Path:
    """node_modules/.bin: the Inspector, the conformance suite, Claude Code, mcpb, Node 22.

    Installed once: the suite's workers wait on one lock while the first installs.
    """
    with (E2E / ".npm-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((BIN / tool).exists() for tool in NODE_TOOLS):
            npm = shutil.which("npm")
            assert npm, "the e2e tests need npm (Node.js) on the machine"
            # `npm install --no-save` follows the lock file like `npm ci`, but tolerates an
            # optional platform package the registry does not serve (vite's Windows helper).
            subprocess.run(
                [npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=E2E,
                check=True,
                timeout=600,
            )
    return BIN


def environment(node_tools: Path, home: Path, piper_home: Path) -> dict[str, str]:
    """Node 22 and this Python's `piper-mcp` first on PATH; a scratch HOME for the Inspector.

    No developer's PIPER_*/Google settings: the same isolation as every test's.
    """
    home.mkdir()
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PIPER_", "GOOGLE_", "CLOUDSDK_"))
    }
    return {
        **inherited,
        "PATH": os.pathsep.join(
            [str(node_tools), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "HOME": str(home),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "PIPER_HOME": str(piper_home),
        "PIPER_REVOCATION_WINDOW": "0",
        "NO_COLOR": "1",
    }


def granted_home(home: Path) -> Path:
    """A local vault whose default agent was granted `openai_api_key`."""
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret("My OpenAI key", VALUE, owner_user_id=me)
    vault.grant(me, "local-agent", "openai_api_key", "My OpenAI key")
    vault.close()
    return home


@pytest.fixture
def node_env(node_tools: Path, tmp_path: Path, piper_home: Path) -> dict[str, str]:
    return environment(node_tools, tmp_path / "inspector-home", piper_home)


@pytest.fixture
def piper_home(tmp_path: Path) -> Path:
    return granted_home(tmp_path / "piper-home")


@pytest.fixture(scope="module")
def shared_http_server(
    node_tools: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], str]]:
    """One such server for a whole module of clients that do not change its vault."""
    folder = tmp_path_factory.mktemp("e2e")
    env = environment(node_tools, folder / "inspector-home", granted_home(folder / "piper-home"))
    with mcp_http_servers(env) as start:
        yield env, start("streamable-http")
