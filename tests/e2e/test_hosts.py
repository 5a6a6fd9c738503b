"""Issue 12, hosts: every ready-to-paste configuration parses and runs piper-mcp.

Each host file is read as its host reads it; where the host has a command line here
(Claude Code), the host itself adds and connects the server. Local entries carry
PIPER_HOME, since hosts start servers without the user's shell environment.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from piper_mcp.cli import _parser
from piper_mcp.server.credentials import looks_like_placeholder

ROOT = Path(__file__).resolve().parents[2]
# Each host file and the key its host reads the servers from.
HOST_FILES = {
    "mcp.json": "mcpServers",
    "examples/hosts/claude_desktop_config.json": "mcpServers",
    "examples/hosts/claude_code_mcp.json": "mcpServers",
    "examples/hosts/cursor_mcp.json": "mcpServers",
    "examples/hosts/vscode_mcp.json": "servers",
}
INPUT = re.compile(r"\$\{input:([^}]+)\}")
# A local entry's PIPER_HOME: the example path piper-mcp refuses until it is replaced, or
# (in Claude Code's project file, shared by a team) the user's own, else the default.
PLACEHOLDER = "/absolute/path/to/your/piper-home"
FROM_THE_SHELL = {"examples/hosts/claude_code_mcp.json": "${PIPER_HOME:-}"}


def servers(path: str) -> dict[str, dict[str, Any]]:
    document = json.loads((ROOT / path).read_text())
    return document[HOST_FILES[path]]


def test_every_host_file_is_checked_here() -> None:
    shipped = {f"examples/hosts/{p.name}" for p in (ROOT / "examples/hosts").glob("*.json")}
    assert shipped | {"mcp.json"} == set(HOST_FILES)


@pytest.mark.parametrize("path", HOST_FILES)
def test_each_entry_is_a_piper_mcp_command_or_its_http_url(path: str) -> None:
    for name, entry in servers(path).items():
        if entry.get("type") == "http":
            assert entry["url"] == "http://127.0.0.1:8000/mcp", name
            continue
        assert entry["command"] == "piper-mcp", name
        options = _parser().parse_args(entry["args"])  # exits on arguments it cannot parse
        env = entry.get("env", {})
        if options.local:  # without PIPER_HOME a host silently serves the default vault
            assert env["PIPER_HOME"] == FROM_THE_SHELL.get(path, PLACEHOLDER), name
        else:  # the cloud: an example value `check` flags, or one the host asks for
            client_id = env["PIPER_CLIENT_ID"]
            assert looks_like_placeholder(client_id) or INPUT.fullmatch(client_id), name


def test_vs_code_asks_for_secrets_as_passwords() -> None:
    document = json.loads((ROOT / "examples/hosts/vscode_mcp.json").read_text())
    inputs = {item["id"]: item for item in document["inputs"]}
    asked = set()
    for entry in document["servers"].values():
        for variable, value in entry.get("env", {}).items():
            for input_id in INPUT.findall(value):
                asked.add(input_id)
                assert inputs[input_id]["type"] == "promptString"
                if "SECRET" in variable:
                    assert inputs[input_id].get("password") is True, variable
    assert asked == set(inputs)  # no input asked for and never used


# --- Claude Code, the host itself ------------------------------------------------------


def claude(node_env: dict[str, str], cwd: Path, *args: str) -> str:
    """Claude Code's CLI, kept off the network (it needs none for `mcp` commands)."""
    env = {
        **node_env,
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        ["claude", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def shell_without_piper_home(node_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """A shell with no PIPER_HOME, and the default vault's folder `local home` prints there."""
    env = {name: value for name, value in node_env.items() if name != "PIPER_HOME"}
    env["XDG_DATA_HOME"] = str(Path(env["HOME"]) / "data")
    printed = subprocess.run(
        ["piper-mcp", "local", "home"], env=env, capture_output=True, text=True, check=True
    )
    return env, Path(printed.stdout.strip())


def test_claude_code_adds_readmes_entry_and_connects(
    node_env: dict[str, str], piper_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shell, default_vault = shell_without_piper_home(node_env)
    # README: claude mcp add piper -e PIPER_HOME="$(piper-mcp local home)" -- piper-mcp ...
    claude(
        shell, project, "mcp", "add", "piper", "-e", f"PIPER_HOME={piper_home}", "--",
        "piper-mcp", "serve", "--local",
    )  # fmt: skip
    assert f"PIPER_HOME={piper_home}" in claude(shell, project, "mcp", "get", "piper")
    assert "piper: piper-mcp serve --local - ✔ Connected" in claude(shell, project, "mcp", "list")
    assert not default_vault.exists()  # the entry's vault was served, not the default


def test_claude_code_writes_the_project_file_we_ship(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # README: claude mcp add --scope project piper -e 'PIPER_HOME=${PIPER_HOME:-}' -- ...
    claude(
        node_env, project, "mcp", "add", "--scope", "project", "piper",
        "-e", "PIPER_HOME=${PIPER_HOME:-}", "--", "piper-mcp", "serve", "--local",
    )  # fmt: skip
    written = json.loads((project / ".mcp.json").read_text())
    assert written == json.loads((ROOT / "examples/hosts/claude_code_mcp.json").read_text())


@pytest.mark.parametrize("in_the_shell", [True, False], ids=["PIPER_HOME set", "unset"])
def test_claude_code_connects_the_project_file(
    in_the_shell: bool, node_env: dict[str, str], piper_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "examples/hosts/claude_code_mcp.json", project / ".mcp.json")
    # What the user's "approve" in Claude Code records for a project's servers.
    settings = Path(node_env["HOME"]) / ".claude.json"
    settings.write_text(
        json.dumps(
            {
                "projects": {
                    str(project): {
                        "hasTrustDialogAccepted": True,
                        "enabledMcpjsonServers": ["piper"],
                    }
                }
            }
        )
    )
    shell, default_vault = shell_without_piper_home(node_env)
    if in_the_shell:
        shell["PIPER_HOME"] = str(piper_home)
    listed = claude(shell, project, "mcp", "list")
    assert "piper: piper-mcp serve --local - ✔ Connected" in listed
    assert "Missing environment variables" not in listed
    # Unset, the server had the default vault: the one `piper-mcp local ...` uses in that
    # shell, not a new one in a folder named `${PIPER_HOME}` inside the project.
    assert default_vault.exists() != in_the_shell
    assert {entry.name for entry in project.iterdir()} <= {".mcp.json", ".claude"}


def test_claude_code_connects_another_server_wrapped_by_exec(
    node_env: dict[str, str], piper_home: Path, tmp_path: Path
) -> None:
    """docs/exec.md: the entry holds `piper:VARIABLE`; exec hands the server the value.

    Without a grant for its variable, the wrapped server never starts: Claude Code shows
    it failed, rather than a server running without its key.
    """
    project = tmp_path / "project"
    project.mkdir()
    server = str(ROOT / "tests" / "cli" / "env_report_server.py")
    for name, variable in (("wrapped", "openai_api_key"), ("ungranted", "github_token")):
        claude(
            node_env, project, "mcp", "add", name, "-e", f"PIPER_HOME={piper_home}",
            "-e", f"OPENAI_API_KEY=piper:{variable}", "--",
            "piper-mcp", "exec", "--local", "--", "python", server,
        )  # fmt: skip
    entry = claude(node_env, project, "mcp", "get", "wrapped")
    assert "OPENAI_API_KEY=piper:openai_api_key" in entry
    listed = claude(node_env, project, "mcp", "list")
    assert f"wrapped: piper-mcp exec --local -- python {server} - ✔ Connected" in listed
    assert f"ungranted: piper-mcp exec --local -- python {server} - ✘ Failed" in listed
