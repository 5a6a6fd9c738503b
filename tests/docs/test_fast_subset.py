"""README's fast subset (`pytest -m "not e2e"`) leaves out exactly the end-to-end tests.

The command itself would run the suite inside the suite; collecting it shows what it
runs: everything but tests/e2e, which needs Node and npm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*marker: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *marker],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_not_e2e_is_the_suite_without_the_node_tests() -> None:
    fast = collected("-m", "not e2e")
    everything = collected()
    e2e = set(everything) - set(fast)
    assert e2e and all(test.startswith("tests/e2e/") for test in e2e)
    assert not any(test.startswith("tests/e2e/") for test in fast)
    assert len(fast) + len(e2e) == len(everything)
