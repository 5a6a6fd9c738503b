"""`piper-mcp check`: is everything a host needs in place? A report with a fix per problem."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import TextIO

from piper_mcp.piper import PiperError
from piper_mcp.printable import printable
from piper_mcp.server.desk import CredentialDesk
from piper_mcp.server.redaction import Redactor
from piper_mcp.server.run import build_desk
from piper_mcp.server.settings import ServeSettings


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str | None = None


async def examine(desk: CredentialDesk) -> list[Finding]:
    client = desk.client
    settings = client.settings
    findings = [
        Finding(
            "configuration",
            bool(settings.client_id and desk.declared),
            f"agent {settings.client_id or '(none)'}, protocol v{client.protocol_version}, "
            f"variables: {', '.join(desk.declared) or '(none)'}",
            None
            if settings.client_id and desk.declared
            else "Set PIPER_CLIENT_ID and PIPER_VARIABLES (or use --local).",
        )
    ]
    link = await desk.check_link()
    findings.append(
        Finding(
            "piper link",
            link.context != "none",
            f"{link.context} context {link.instance_id_suffix or ''} via {link.link_url} "
            f"({link.latency_ms:.0f} ms){': ' + link.problem if link.problem else ''}",
            link.advice,
        )
    )
    try:
        await client.check_agent()
        findings.append(Finding("backend and agent credentials", True, "Piper accepts this agent"))
    except PiperError as error:
        findings.append(
            Finding("backend and agent credentials", False, error.message, error.advice or None)
        )
    for status in (await desk.list_variables()).variables:
        findings.append(
            Finding(
                f"variable {status.variable}",
                status.source == "piper",
                "granted in Piper"
                if status.source == "piper"
                else f"{status.source}: {status.piper_problem or 'not granted in Piper'}",
                status.advice,
            )
        )
    return findings


def run_check(options: ServeSettings, out: TextIO, *, as_json: bool) -> int:
    """Print the report; 0 only when every check passes.

    Backend text is scrubbed (a backend or a proxy may echo the client secret) and
    printed escaped (it may hold terminal escapes).
    """
    redactor = Redactor()
    with ExitStack() as stack:
        desk = build_desk(options, stack)
        redactor.watch(desk.client)
        findings = asyncio.run(_examine_and_close(desk))
    healthy = all(finding.ok for finding in findings)
    if as_json:
        report = json.dumps({"ok": healthy, "checks": [asdict(f) for f in findings]}, indent=2)
        out.write(redactor.scrub(report) + "\n")
    else:
        for finding in findings:
            shown = printable(redactor.scrub(f"{finding.check}: {finding.detail}"))
            out.write(f"{'ok  ' if finding.ok else 'FAIL'}  {shown}\n")
            if finding.fix:
                out.write(f"      fix: {printable(redactor.scrub(finding.fix))}\n")
        out.write("\nEverything a host needs works.\n" if healthy else "\nSome checks failed.\n")
    return 0 if healthy else 1


async def _examine_and_close(desk: CredentialDesk) -> list[Finding]:
    try:
        return await examine(desk)
    finally:
        await desk.client.aclose()
