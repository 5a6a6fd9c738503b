"""The dashboard's pages vs a trivial page on the same kind of server (A B A B, medians).

`piper-mcp local dashboard --no-browser` is started as README gives it, over a vault
with 10 agents, 50 secrets, 50 grants and a full day of activity (5 000 MCP audit
lines, 5 000 vault audit rows), and logged in with its link. Beside it, a bare
Starlette app on uvicorn answers one constant page of the same size as the overview.
Each round fetches every dashboard page and the trivial page `requests` times over one
keep-alive connection, alternating; the table gives each page's median and its ratio
to the trivial page's median in the same round. The activity page reads both trails
again only when one changed: these are its warm figures (a cold read adds some 80 ms).

    python -m bench.dashboard               # 5 rounds of 50 requests
    python -m bench.dashboard --rounds 9
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.default_path import minimal_environment, piper_mcp_script
from piper_mcp.local.vault import AuditEntry, Vault

PAGES = ("/", "/grants", "/secrets", "/activity", "/changes")
LOGIN = re.compile(r"http://127\.0\.0\.1:\d+/dashboard-[\w-]+/login\?token=[\w-]+")
TRIVIAL_SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route
    page = HTMLResponse("x" * int(sys.argv[1]))
    app = Starlette(routes=[Route("/", lambda request: page)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    """
)


def make_busy_vault(home: Path) -> None:
    """10 agents, 50 secrets and grants, and a day of activity in both audit trails."""
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    now = time.time()
    for agent in range(10):
        variables = [f"key_{agent}_{n}" for n in range(5)]
        vault.add_agent(f"agent-{agent}", None, owner_user_id=me, variables=variables)
        for variable in variables:
            vault.put_secret(f"secret {variable}", "v" * 40, owner_user_id=me)
            vault.grant(me, f"agent-{agent}", variable, f"secret {variable}")
    rows = [
        AuditEntry(
            now - i * 17,
            f"agent-{i % 10}",
            me,
            "piper-resolve-variable-mapping",
            f"key_{i % 10}_{i % 5}",
            "ok" if i % 7 else "grant_not_found",
            None,
        )
        for i in range(5000)
    ]
    vault.append_audit(rows)
    vault.close()
    with (home / "audit.jsonl").open("w") as trail:
        for i in range(5000):
            at = datetime.fromtimestamp(now - i * 17, UTC).isoformat(timespec="milliseconds")
            entry = {
                "time": at,
                "client": "bench 1.0",
                "agent": f"agent-{i % 10}",
                "transport": "stdio",
                "variable": f"key_{i % 10}_{i % 5}",
                "mode": "token",
                "source": "piper_sts",
                "consent_asked": False,
                "consent_given": None,
                "outcome": "ok" if i % 7 else "refused",
                "reason": "not_needed",
            }
            trail.write(json.dumps(entry) + "\n")


@contextmanager
def dashboard(home: Path) -> Iterator[tuple[httpx.Client, list[str]]]:
    command = [piper_mcp_script(), "local", "dashboard", "--no-browser"]
    process = subprocess.Popen(
        command,
        env=minimal_environment(PIPER_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        link = next(found.group(0) for line in process.stdout if (found := LOGIN.search(line)))
        with httpx.Client(base_url=link.split("/login")[0]) as browser:
            browser.get(link)
            yield browser, command
    finally:
        process.terminate()
        process.communicate(timeout=20)


@contextmanager
def trivial(size: int) -> Iterator[httpx.Client]:
    with socket_port() as port:
        process = subprocess.Popen(
            [sys.executable, "-c", TRIVIAL_SERVER, str(size), str(port)],
            stderr=subprocess.DEVNULL,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    client.get("/")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield client
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def median_ms(client: httpx.Client, path: str, requests: int) -> float:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}")
    return 1000 * statistics.median(times)


def run(rounds: int = 5, requests: int = 50) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {page: [] for page in PAGES}
    medians: dict[str, list[float]] = {page: [] for page in (*PAGES, "trivial")}
    with tempfile.TemporaryDirectory(prefix="piper-bench-") as folder:
        home = Path(folder) / "vault"
        make_busy_vault(home)
        with dashboard(home) as (browser, command):
            size = len(browser.get("/").content)
            with trivial(size) as floor:
                for _ in range(rounds):
                    base = median_ms(floor, "/", requests)
                    medians["trivial"].append(base)
                    for page in PAGES:
                        took = median_ms(browser, page, requests)
                        medians[page].append(took)
                        ratios[page].append(took / base)
    return {
        "rounds": rounds,
        "requests": requests,
        "page_bytes": size,
        "ms": {page: round(statistics.median(times), 2) for page, times in medians.items()},
        "ratio": {page: round(statistics.median(r), 2) for page, r in ratios.items()},
        "command": " ".join(["piper-mcp", *command[1:]]),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"| page (median of {results['rounds']} rounds × {results['requests']} requests) "
        "| ms | ratio to a trivial page |",
        "|---|---|---|",
        f"| trivial Starlette page ({results['page_bytes']} bytes) | "
        f"{results['ms']['trivial']} | 1.00x |",
        *(f"| `{page}` | {results['ms'][page]} | {results['ratio'][page]}x |" for page in PAGES),
        "",
        "A vault with 10 agents, 50 secrets and grants, 5 000 lines in each audit trail.",
        f"Command measured: `{results['command']}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--requests", type=int, default=50, help="requests per page a round")
    arguments = parser.parse_args()
    print(table(run(arguments.rounds, arguments.requests)))


if __name__ == "__main__":
    main()
