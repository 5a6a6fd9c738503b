"""`piper-mcp check`: is everything a host needs in place? A report with a fix per problem."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import TextIO

from piper_mcp.invocation import command
from piper_mcp.piper import PiperError, PiperLinkNeededError
from piper_mcp.printable import printable
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.redaction import Redactor
from piper_mcp.server.results import LinkStatus
from piper_mcp.server.serve import build_service
from piper_mcp.server.settings import ServeSettings


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str | None = None


async def examine(service: CredentialService) -> list[Finding]:
    client = service.client
    settings = client.settings
    agent = f"agent {settings.client_id or '(none)'}"
    if service.vault:  # which vault: a host may be given another PIPER_HOME than this shell
        agent += f" of the local vault {service.vault}"
    problem = service.configuration_problem()
    findings = [
        Finding(
            "configuration",
            problem is None,
            f"{agent}, protocol v{client.protocol_version}, "
            f"variables: {', '.join(service.declared) or '(none)'}",
            problem,
        )
    ]
    link = await service.check_link()
    findings.append(
        Finding(
            "piper link",
            link.context != "none",
            _link_detail(link, service),
            # Said to the person running `check`, not to a model:
            f"{PiperLinkNeededError.advice} For a local vault instead, "
            f"`{command('check', '--local')}`."
            if link.context == "none"
            else None,
        )
    )
    try:
        await client.check_agent()
        findings.append(Finding("backend and agent credentials", True, "Piper accepts this agent"))
    except PiperError as error:
        findings.append(
            Finding("backend and agent credentials", False, error.message, error.advice or None)
        )
    for status in (await service.list_variables()).variables:
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


def _link_detail(link: LinkStatus, service: CredentialService) -> str:
    """Where the instance id came from, and from where, in words a user reads."""
    # The embedded Link answers in this process: its placeholder URL would only puzzle.
    where = "the local vault's Link, in-process" if service.vault else link.link_url
    found = {
        "piper_link": f"instance {link.instance_id_suffix} from {where}",
        "configured": f"instance {link.instance_id_suffix} from PIPER_INSTANCE_ID",
        "none": f"no instance id from {where}",
    }[link.context]
    problem = f": {link.problem}" if link.problem else ""
    return f"{found} ({link.latency_ms:.0f} ms){problem}"


def run_check(options: ServeSettings, out: TextIO, *, as_json: bool) -> int:
    """Print the report; 0 only when every check passes.

    Backend text is scrubbed (a backend or a proxy may echo the client secret) and
    printed escaped (it may hold terminal escapes).
    """
    redactor = Redactor()
    with ExitStack() as stack:
        service = build_service(options, stack)
        redactor.watch(service.client)
        findings = asyncio.run(_examine_and_close(service))
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


async def _examine_and_close(service: CredentialService) -> list[Finding]:
    try:
        return await examine(service)
    finally:
        await service.client.aclose()
