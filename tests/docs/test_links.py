"""Links between README.md, SECURITY.md and docs/ lead somewhere: the file and the heading exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *DOCS]


def anchors(page: Path) -> set[str]:
    """GitHub's anchor for each heading: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} leads nowhere"
        if anchor:
            assert anchor in anchors(target), f"{page.name}: {link}: no such heading"


def test_readme_links_every_page_in_docs_security_md_and_the_licence() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [
        page.name
        for page in [*DOCS, ROOT / "SECURITY.md", ROOT / "LICENSE"]
        if f"({page.relative_to(ROOT)})" not in readme
    ] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_test_named_as_proof_exists(page: Path) -> None:
    """`tests/x/test_y.py::test_z`, or a bare `test_y.py::test_z`, names a real test."""
    for path, name in re.findall(
        r"`((?:tests/[\w/]+/)?test_\w+\.py)(?:::(\w+))?", page.read_text()
    ):
        found = [ROOT / path] if path.startswith("tests/") else list(ROOT.glob(f"tests/*/{path}"))
        assert len(found) == 1 and found[0].is_file(), f"{page.name}: {path} is not one test file"
        if name:
            assert f"def {name}(" in found[0].read_text(), f"{page.name}: no {path}::{name}"


def test_the_layout_names_every_module_under_its_folder() -> None:
    layout = (ROOT / "docs" / "development.md").read_text().split("## Layout", 1)[1]
    blocks = re.split(r"^(src/piper_mcp/(?:\w+/)*)", layout, flags=re.MULTILINE)[1:]
    named = {
        folder.rstrip("/"): block for folder, block in zip(blocks[::2], blocks[1::2], strict=True)
    }
    source = ROOT / "src" / "piper_mcp"
    modules = [path for path in source.rglob("*.py") if not path.name.startswith("__")]
    unnamed = [
        str(path.relative_to(source))
        for path in modules
        if not re.search(
            rf"\b{re.escape(path.name)}",
            named.get(f"src/{path.parent.relative_to(source.parent)}", ""),
        )
    ]
    assert len(named) == 6 and modules
    assert not unnamed, f"name these in docs/development.md's Layout: {unnamed}"
