"""Every module the code imports comes from a dependency pyproject.toml declares.

A module that only arrives because a dependency happens to need it today (httpcore
through httpx, markupsafe through jinja2) breaks the day that dependency stops needing
it. src/ may import the runtime dependencies; tests/ and bench/ the test extra too.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OURS = {"piper_mcp", "tests", "bench"}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(requirements: list[str]) -> set[str]:
    return {normalized(re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0]) for line in requirements}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


RUNTIME = declared(PROJECT["dependencies"])
WITH_TESTS = RUNTIME | declared(PROJECT["optional-dependencies"]["test"])


def imported(folder: Path) -> dict[str, Path]:
    """Top-level modules imported anywhere under `folder` (module -> one file importing it)."""
    found: dict[str, Path] = {}
    for path in (p.relative_to(folder) for p in folder.rglob("*.py")):
        if "node_modules" in path.parts or any(part.startswith(".") for part in path.parts):
            continue  # npm's packages, caches (bench/.cache holds a pyper-sdk release)
        for node in ast.walk(ast.parse((folder / path).read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], folder / path)
    return found


@pytest.mark.parametrize(
    ("folder", "allowed"), [("src", RUNTIME), ("tests", WITH_TESTS), ("bench", WITH_TESTS)]
)
def test_every_import_is_a_declared_dependency(folder: str, allowed: set[str]) -> None:
    providers = packages_distributions()
    undeclared = {
        module: str(path.relative_to(ROOT))
        for module, path in imported(ROOT / folder).items()
        if module not in sys.stdlib_module_names
        and module not in OURS
        and not {normalized(d) for d in providers.get(module, [])} & allowed
    }
    assert undeclared == {}


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "uses.py").write_text("import httpcore\nfrom markupsafe import Markup\n")
    assert set(imported(tmp_path)) == {"httpcore", "markupsafe"}
    assert not {normalized(d) for d in packages_distributions()["httpcore"]} & declared(
        ["httpx>=0.28"]
    )
