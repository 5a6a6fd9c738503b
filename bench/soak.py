"""Soak: does `serve --local` stay flat under sustained use? RSS and descriptors per 1 000.

- 40 000 `get_secret` calls over stdio with token reuse off
  (`PIPER_REVOCATION_WINDOW=0`), so every call makes the embedded backend issue
  a new STS token, as clients that never reuse tokens (the published SDK) do;
- 20 000 abandoned streamable HTTP sessions: `initialize`, then never a word more
  (four times the 5 000 asked for, and 40 000 calls twice the 20 000: the lines
  level out only after the caps below piper-mcp's fill too).

Growth is reported per 1 000 while piper-mcp's caps fill (the embedded backend keeps
up to 10 000 issued STS tokens for revocation, then evicts the oldest; at most 100
HTTP sessions stay open, then the least recently used idle one makes room), from then
on, and over the last quarter, where the line should be flat (target: under 50 KiB
per 1 000). Between the two, SQLite's page cache (2 MiB per connection) fills as the
vault's audit table grows to its 100 000 rows, and the allocator settles.

Each abandoned session says the same `clientInfo`, as one host starting sessions over
and over does: names unique per session would measure pydantic-core's JSON string
cache instead (bounded at 16 384 strings, some 1 MiB), not piper-mcp.

    python -m bench.soak [--calls 40000] [--sessions 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.default_path import StdioPeer, piper_mcp_script
from bench.http_load import bench_vault, serving_http
from piper_mcp.local.tokens import MAX_TOKENS

EVERY = 1000
HEADERS = {"accept": "application/json, text/event-stream"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def growth(samples: list[dict[str, int]], capped_at: int) -> dict[str, float | None]:
    """RSS KiB per 1 000 while piper-mcp's caps fill (up to `capped_at`), from then on, and
    over the last quarter of the run, the steady state (caches below piper-mcp, such as
    SQLite's page cache of the growing audit table, may still be filling after the cap).

    None where the run is too short to tell.
    """
    filling = [point for point in samples if point["done"] <= capped_at]
    capped = [point for point in samples if point["done"] >= capped_at]
    steady = samples[-max(2, len(samples) // 4) :]

    def slope(points: list[dict[str, int]]) -> float | None:
        done = (points[-1]["done"] - points[0]["done"]) / EVERY if len(points) > 1 else 0
        return round((points[-1]["rss_kib"] - points[0]["rss_kib"]) / done, 1) if done else None

    return {
        "while_filling": slope(filling),
        "once_capped": slope(capped),
        "last_quarter": slope(steady),
    }


def calls_without_token_reuse(folder: Path, calls: int) -> dict[str, Any]:
    env = {**os.environ, **bench_vault(folder), "PIPER_REVOCATION_WINDOW": "0"}
    peer = StdioPeer([piper_mcp_script(), "serve", "--local"], env)
    try:
        peer.initialize()
        pid = peer.process.pid
        samples = [{"done": 0, "rss_kib": rss_kib(pid), "fds": descriptors(pid)}]
        errors = 0
        for done in range(1, calls + 1):
            answer = peer.call("get_secret", {"variable": "bench_key"})
            errors += bool(answer.get("error") or answer["result"].get("isError"))
            if done % EVERY == 0:
                samples.append({"done": done, "rss_kib": rss_kib(pid), "fds": descriptors(pid)})
    finally:
        peer.close()
    return {
        "calls": calls,
        "errors": errors,
        "samples": samples,
        "growth": growth(samples, capped_at=MAX_TOKENS),  # one new STS token per call
    }


def abandoned_sessions(folder: Path, sessions: int) -> dict[str, Any]:
    env = {**os.environ, **bench_vault(folder)}
    with serving_http(folder, env) as (url, pid), httpx.Client(timeout=30) as http:
        samples = [{"done": 0, "rss_kib": rss_kib(pid), "fds": descriptors(pid)}]
        statuses: dict[int, int] = {}
        for done in range(1, sessions + 1):
            opened = http.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": done,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "abandoning-host", "version": "1"},
                    },
                },
                headers=HEADERS,
            )
            statuses[opened.status_code] = statuses.get(opened.status_code, 0) + 1
            if done % EVERY == 0:
                samples.append({"done": done, "rss_kib": rss_kib(pid), "fds": descriptors(pid)})
    return {
        "sessions": sessions,
        "answers": {str(status): count for status, count in sorted(statuses.items())},
        "samples": samples,
        "growth": growth(samples, capped_at=EVERY),  # 100 sessions: capped by the first sample
    }


def run(calls: int = 40_000, sessions: int = 20_000) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="piper-soak-") as name:
        (Path(name) / "calls").mkdir()
        results["calls"] = calls_without_token_reuse(Path(name) / "calls", calls)
    with tempfile.TemporaryDirectory(prefix="piper-soak-") as name:
        results["sessions"] = abandoned_sessions(Path(name), sessions)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| load | done | RSS at start → end (MiB) | descriptors start → end | "
        "KiB per 1 000 while the caps fill | from then on | last quarter | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key, count in (
        (f"`get_secret` over stdio, token reuse off (cap: {MAX_TOKENS} tokens)", "calls", "calls"),
        ("abandoned streamable HTTP sessions (cap: 100 open)", "sessions", "sessions"),
    ):
        section = results[key]
        first, last = section["samples"][0], section["samples"][-1]
        slopes = " | ".join(
            "-" if section["growth"][key] is None else str(section["growth"][key])
            for key in ("while_filling", "once_capped", "last_quarter")
        )
        lines.append(
            f"| {label} | {section[count]} {count} | "
            f"{first['rss_kib'] / 1024:.1f} → {last['rss_kib'] / 1024:.1f} | "
            f"{first['fds']} → {last['fds']} | {slopes} | < 50, flat |"
        )
    calls, sessions = results["calls"], results["sessions"]
    answers = ", ".join(f"{count}× HTTP {status}" for status, count in sessions["answers"].items())
    lines.append("")
    lines.append(f"Tool errors during the calls: {calls['errors']}. Session answers: {answers}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40_000)
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args()
    print(table(run(args.calls, args.sessions)))


if __name__ == "__main__":
    main()
