"""The repository's own front-door files: SECURITY.md, LICENSE and .gitignore say what they must."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "SECURITY.md"


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_a_vulnerability_is_reported_privately_on_github() -> None:
    reporting = section(POLICY.read_text(), "Reporting a vulnerability")
    assert "private vulnerability reporting" in reporting
    assert "do not open a public issue" in reporting
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", reporting), "no e-mail address to guess"


def test_the_supported_version_is_the_one_released() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    supported = section(POLICY.read_text(), "Supported versions")
    assert f"{version.rsplit('.', 1)[0]}.x" in supported


def test_security_md_and_docs_security_number_the_same_rules() -> None:
    """SECURITY.md gives each rule in short; docs/security.md's table, under the same
    number and name, how it is kept and its test."""
    policy = section(POLICY.read_text(), "The rules piper-mcp keeps")
    short = re.findall(r"^(\d+)\. \*\*(.+?)\.?\*\*", policy, flags=re.MULTILINE)
    model = (ROOT / "docs" / "security.md").read_text()
    kept = re.findall(r"^\| (\d+)\. (.+?) \|", model, flags=re.MULTILINE)
    assert short == kept and len(short) >= 15
    assert [number for number, _ in short] == [str(n) for n in range(1, len(short) + 1)]
    assert "| One consent, one value |" in model and "**one consent, one value**" in policy


def test_the_licence_is_the_mit_text_pyproject_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    licence = (ROOT / "LICENSE").read_text()
    assert project["license"] == "MIT"
    assert licence.startswith("MIT License\n\nCopyright (c) 2026 The piper-mcp authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in licence


def test_what_the_docs_commands_make_is_ignored() -> None:
    """Keys, certificates and token files from the docs' commands, and what packing makes,
    never end up in a commit by `git add .`."""
    patterns = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    made = [
        "server.pem",  # python -m trustme (docs/local-backend.md)
        "server.key",
        "client.pem",
        ".piper-mcp-token",  # docs/security.md, if written into the clone
        "piper-mcp.mcpb",  # npx @anthropic-ai/mcpb pack (README)
        "piper_mcp-0.1.0-py3-none-any.whl",  # pip wheel --no-deps . (README)
    ]
    assert [name for name in made if not any(fnmatch(name, p) for p in patterns)] == []
