"""Issue 12.5: hints name piper-mcp the way the user started it, so they can run them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from piper_mcp import invocation


@pytest.fixture
def venv_program(tmp_path: Path) -> Path:
    program = tmp_path / ".venv" / "bin" / "piper-mcp"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_a_program_off_path_is_named_as_it_was_started(
    venv_program: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(venv_program.parents[2])
    monkeypatch.setattr(sys, "argv", [".venv/bin/piper-mcp", "serve", "--local"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invocation.command("local", "secret", "set", "My OpenAI key") == (
        ".venv/bin/piper-mcp local secret set 'My OpenAI key'"
    )


def test_the_program_path_finds_is_named_by_its_name(
    venv_program: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [str(venv_program), "serve"])
    monkeypatch.setenv("PATH", f"{venv_program.parent}{os.pathsep}/usr/bin")
    assert invocation.command("local", "init") == "piper-mcp local init"


def test_another_piper_mcp_on_path_does_not_stand_in_for_this_one(
    venv_program: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere" / "piper-mcp"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(venv_program), "serve"])
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}/usr/bin")
    assert invocation.program() == str(venv_program)


def test_a_path_with_spaces_is_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "my tools" / "piper-mcp"
    program.parent.mkdir()
    program.write_text("")
    monkeypatch.setattr(sys, "argv", [str(program)])
    monkeypatch.setenv("PATH", "/usr/bin")
    assert invocation.program() == f"'{program}'"


def test_python_dash_m_is_named_with_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/piper_mcp/__main__.py", "serve"])
    assert invocation.program() == f"{sys.executable} -m piper_mcp"
