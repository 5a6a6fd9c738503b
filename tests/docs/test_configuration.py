"""docs/configuration.md is the table of every setting: none missing, none invented."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import piper_mcp
from piper_mcp.cli import main
from piper_mcp.piper import AsyncPiperClient

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "piper_mcp"
PAGE = ROOT / "docs" / "configuration.md"


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class in piper_mcp (every module imported to find them)."""
    for module in pkgutil.walk_packages(piper_mcp.__path__, "piper_mcp."):
        if not module.name.endswith(".__main__"):  # running it is its import
            importlib.import_module(module.name)
    found, todo = [], [BaseSettings]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__module__.startswith("piper_mcp."):
                found.append(cls)
    return found


def env_names(settings: type[BaseSettings]) -> set[str]:
    """What pydantic-settings reads for each field: its env-like alias, or prefix + name."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for field, info in settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
        named = [str(choice).upper() for choice in choices if str(choice) != field]
        names.update(named or [f"{prefix}{field}".upper()])
    return names


def environ_reads() -> set[str]:
    """Literal names read with os.environ.get / os.environ[...] / os.getenv anywhere in src."""
    names = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target = None
            if isinstance(node, ast.Call) and node.args:
                called = ast.unparse(node.func)
                if called in ("os.environ.get", "os.getenv", "environ.get"):
                    target = node.args[0]
            elif (
                isinstance(node, ast.Subscript)
                and ast.unparse(node.value) == "os.environ"
                and isinstance(node.ctx, ast.Load)
            ):
                target = node.slice
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                names.add(target.value)
    return names


def rows() -> dict[str, str]:
    """Each documented variable (first column of the table) and its row."""
    documented = {}
    for line in PAGE.read_text().splitlines():
        if line.startswith("| `"):
            first = line.split(" | ")[0]
            for name in re.findall(r"`(PIPER_[A-Z0-9_]+)`", first):
                assert name not in documented, f"{name} has two rows"
                documented[name] = line
    return documented


def test_the_code_reads_the_settings_this_test_expects_to_find() -> None:
    # Guards the finders below: if they found nothing, the other tests would pass vacuously.
    read = set().union(*(env_names(cls) for cls in settings_classes()))
    assert {"PIPER_CLIENT_ID", "PIPER_MCP_REVEAL", "PIPER_LOCAL_AUDIT_MAX_ROWS"} <= read
    assert "PIPER_VARIABLES" in read and "PIPER_MCP_VARIABLES" not in read
    assert "PIPER_HOME" in environ_reads()


def test_every_setting_the_code_reads_has_a_row() -> None:
    read = set().union(*(env_names(cls) for cls in settings_classes()))
    read |= {name for name in environ_reads() if name.startswith("PIPER_")}
    missing = sorted(read - rows().keys())
    assert not missing, f"add a row to docs/configuration.md for {missing}"


def test_every_row_names_a_real_setting() -> None:
    read = set().union(*(env_names(cls) for cls in settings_classes())) | environ_reads()
    invented = sorted(rows().keys() - read)
    assert not invented, f"docs/configuration.md documents settings nothing reads: {invented}"


def test_other_environment_the_code_reads_is_named_on_the_page() -> None:
    text = PAGE.read_text()
    others = sorted(name for name in environ_reads() if not name.startswith("PIPER_"))
    assert [name for name in others if name not in text] == []


def test_the_names_in_brackets_are_real_flags_and_keywords(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    keywords = inspect.signature(AsyncPiperClient).parameters
    checked = 0
    for name, row in rows().items():
        for given in re.findall(r"\(`([^`]+)`\)", row.split(" | ")[0]):
            checked += 1
            if given.startswith("--"):
                assert re.search(rf"{re.escape(given)}\b", serve_help), (name, given)
            else:
                assert given in keywords, f"{name}: AsyncPiperClient has no {given}="
    assert checked > 20
