"""`piper-mcp exec`: start a program with Piper secrets in its environment, none in a model's.

Each `--env NAME=VARIABLE`, and each environment variable whose value is `piper:VARIABLE`
(as a host's `env` block sets them), gets the raw value the agent is granted for
VARIABLE: from Piper only (no environment or file fallback), for variables the agent
declares. The reveal policy does not apply: the user wrote the command, not a model.
Each injection is audited, naming the variable and the command (never its arguments,
never the value). Then piper-mcp closes everything it opened and becomes the command
(POSIX), or runs it as a child sharing its stdio and passing on its exit code (Windows).
What fails is said in one line on stderr, and the command is not started.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from piper_mcp.home import DEFAULT_AGENT, default_home
from piper_mcp.invocation import command
from piper_mcp.local.advice import how_to_grant, no_agent, no_vault
from piper_mcp.local.errors import VaultError
from piper_mcp.piper.protocol_names import MAPPING_NOT_FOUND, PERMISSION_DENIED, STORAGE_UNAVAILABLE
from piper_mcp.printable import printable, quoted
from piper_mcp.server.consents import Consent

if TYPE_CHECKING:
    from piper_mcp.server.audit import AuditTrail
    from piper_mcp.server.credentials import CredentialService
    from piper_mcp.server.redaction import Redactor
    from piper_mcp.server.settings import ServeSettings

PREFIX = "piper:"
FAILED = 1
USAGE = 2  # what argparse exits with for a command line it cannot use
NOT_EXECUTABLE = 126  # what a shell exits with for a command it found but cannot run
NOT_FOUND = 127  # ... and for one it did not find
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
EXAMPLE = "--env GITHUB_PERSONAL_ACCESS_TOKEN=github_token"


class ExecError(Exception):
    """Why the command was not started: one line for stderr, and the exit code."""

    def __init__(self, text: str, exit_code: int = FAILED) -> None:
        super().__init__(text)
        self.exit_code = exit_code


class ExecOptions(NamedTuple):  # not a dataclass: `dataclasses` costs exec's start-up
    """What exec reads of `serve`'s settings (docs/configuration.md)."""

    local: bool
    agent: str
    audit_path: Path
    audit_max_bytes: int
    variables: tuple[str, ...] = ()  # PIPER_VARIABLES, for the Piper cloud's agent

    @classmethod
    def of(cls, settings: ServeSettings) -> ExecOptions:
        return cls(
            settings.local,
            settings.agent,
            settings.audit_path(),
            settings.audit_max_bytes,
            tuple(settings.variables),
        )


# The settings `exec --local` reads (its agent, and where and how its audit goes); every
# other PIPER_MCP_* is serve's.
PLAIN_SETTINGS = ("PIPER_MCP_AGENT", "PIPER_MCP_AUDIT_FILE", "PIPER_MCP_AUDIT_MAX_BYTES")


def plain_local_options(agent: str | None, environ: Mapping[str, str]) -> ExecOptions | None:
    """`exec --local`'s settings read without pydantic, whose import is most of exec's own
    start-up and so is added to the command's; None for anything but the plain forms
    (another spelling, an empty value, a number outside its range, PIPER_MCP_LOCAL), which
    `ServeSettings` reads, or says in one line what is wrong with."""
    from piper_mcp.server import audit

    if (
        any(name.upper() != name and name.upper().startswith("PIPER_MCP_") for name in environ)
        or "PIPER_MCP_LOCAL" in environ
    ):
        return None
    agent_setting, audit_file, max_bytes = (environ.get(name) for name in PLAIN_SETTINGS)
    if audit_file == "" or agent_setting == "":
        return None
    if max_bytes is not None and not (
        re.fullmatch(r"[0-9]{1,12}", max_bytes) and int(max_bytes) >= audit.MIN_MAX_BYTES
    ):
        return None
    return ExecOptions(
        local=True,
        agent=agent if agent is not None else agent_setting or DEFAULT_AGENT,
        audit_path=Path(audit_file) if audit_file else default_home() / audit.FILE_NAME,
        audit_max_bytes=int(max_bytes) if max_bytes else audit.DEFAULT_MAX_BYTES,
    )


class Injection(NamedTuple):
    """An environment variable the command gets, and the Piper variable whose value it holds."""

    env_name: str
    variable: str


def run(options: ExecOptions, env_flags: list[str], words: list[str], *, agent_flag: bool) -> int:
    """Become the command `words` with its Piper variables; else one line and an exit code."""
    from piper_mcp.server.redaction import Redactor

    redactor = Redactor()
    try:
        argv = words[1:] if words[:1] == ["--"] else words
        if not argv:
            example = command("exec", "--local", *EXAMPLE.split(), "--", "COMMAND")
            raise ExecError(f"give the command to run after `--`, e.g. `{example}`", USAGE)
        if agent_flag and not options.local:
            raise ExecError(
                "--agent names an agent of the local vault: add --local (the Piper cloud's "
                "agent is PIPER_CLIENT_ID)",
                USAGE,
            )
        wanted = injections(env_flags, os.environ)
        program = find_program(argv[0])
        values = provide(options, wanted, Path(argv[0]).name, redactor)
    except ExecError as error:
        say(str(error), redactor.scrub)
        return error.exit_code
    return become(program, argv, child_environment(os.environ, values), redactor.scrub)


def say(text: str, scrub: Callable[[str], str]) -> None:
    """`piper-mcp: text` on stderr, on one line, without a value this process has seen."""
    print(f"piper-mcp: {scrub(printable(' '.join(text.split())))}", file=sys.stderr, flush=True)


# --- what to inject, and into what ---


def injections(env_flags: list[str], environ: Mapping[str, str]) -> list[Injection]:
    """The `piper:VARIABLE` values in `environ`, then the `--env` flags (which win)."""
    wanted: dict[str, str] = {}
    for name, value in environ.items():
        if value.startswith(PREFIX) and passable(name):
            variable = value.removeprefix(PREFIX)
            if not variable.strip():
                raise ExecError(
                    f"{name}={value!r} names no variable: give {name}=piper:VARIABLE, "
                    "VARIABLE one of the agent's declared variables",
                    USAGE,
                )
            wanted[name] = variable
    given: set[str] = set()
    for flag in env_flags:
        name, equals, variable = flag.partition("=")
        if not equals or not ENV_NAME.fullmatch(name) or not variable.strip():
            raise ExecError(
                f"--env {flag!r} is not NAME=VARIABLE (NAME letters, digits and _, not "
                f"starting with a digit); e.g. {EXAMPLE}",
                USAGE,
            )
        if name in given:
            raise ExecError(f"--env gives {name} twice; give each variable once", USAGE)
        given.add(name)
        wanted[name] = variable
    if not wanted:
        raise ExecError(
            f"nothing to inject: give {EXAMPLE}, or set NAME=piper:VARIABLE in the "
            "command's environment (a host's `env` block)",
            USAGE,
        )
    return [Injection(name, variable) for name, variable in wanted.items()]


def find_program(name: str) -> str:
    """The path of the command `name`, found on PATH as a shell finds it; else why not."""
    if os.sep in name or (os.altsep and os.altsep in name):
        if not os.path.exists(name):
            raise ExecError(f"cannot run {name}: there is no such file", NOT_FOUND)
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise ExecError(
                f"cannot run {name}: it is not an executable file (`chmod +x` it, or give "
                "the program that runs it, e.g. python)",
                NOT_EXECUTABLE,
            )
        return name
    found = shutil.which(name)
    if found is None:
        raise ExecError(
            f"command {name!r} not found on PATH: install it, give its full path, or add "
            "its folder to PATH (a host starts servers with its own PATH; set it in the "
            "server's `env` block)",
            NOT_FOUND,
        )
    return found


def child_environment(environ: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: this one without piper-mcp's own settings, plus `values`.

    `PIPER_*` (PIPER_HOME, the agent's PIPER_CLIENT_SECRET) are for piper-mcp: a command
    that had them could act as the agent and read every variable it is granted.
    """
    from piper_mcp.piper.names import is_own_setting

    kept = {
        name: value
        for name, value in environ.items()
        if passable(name) and not is_own_setting(name)
    }
    return {**kept, **values}


def passable(name: str) -> bool:
    """Whether an environment entry can be handed on: one with no name, or a name with "="
    in it (a raw execve can make them), cannot, and is left out as a shell leaves it out."""
    return bool(name) and "=" not in name and "\0" not in name


# --- the values, audited ---

# The audit trail's reason codes: the protocol's, as the backend answers `serve`, and two
# of exec's own.
NOT_NEEDED = Consent.NOT_NEEDED.value
UNDECLARED = "undeclared"
UNFIT_VALUE = "unfit_value"


class Audit:
    """exec's entries in the audit trail: each variable, and the command that gets it."""

    def __init__(self, trail: AuditTrail, command_name: str, agent: str | None) -> None:
        self.trail = trail
        self.command_name = command_name
        self.agent = agent

    def record(self, outcome: str, variable: str, source: str | None, reason: str) -> None:
        self.trail.record(
            client="piper-mcp exec",
            agent=self.agent,
            transport="exec",
            variable=variable,
            mode="value",
            source=source,
            outcome=outcome,
            reason=reason,
            command=self.command_name,
        )

    def refused(self, variable: str, reason: str, text: str) -> ExecError:
        """The error that stops the command, once the refusal is audited (or says it is not)."""
        from piper_mcp.server.audit import AuditError

        try:
            self.record("refused", variable, None, reason)
        except AuditError as error:
            text += f" (Nor could this be audited: {error})"
        return ExecError(f"did not start {self.command_name}: {text}")

    def fit(self, name: str, value: str) -> str:
        """`value`, if an environment variable can hold it; else the audited refusal."""
        if "\0" in value:
            raise self.refused(
                name,
                UNFIT_VALUE,
                f"the value of {name!r} holds a NUL character, which no environment "
                "variable can; store it encoded (base64, say)",
            )
        return value

    def provided(self, variables: list[str], source: str) -> None:
        """Record each variable as given, once every value is in hand: no record, no value."""
        for variable in variables:
            self.record("ok", variable, source, NOT_NEEDED)


def provide(
    options: ExecOptions, wanted: list[Injection], command_name: str, redactor: Redactor
) -> dict[str, str]:
    """Each injection's value, audited; everything opened for it closed again on return."""
    from piper_mcp.server.audit import AuditError, AuditTrail

    # Closed as this returns: nothing else holds it.
    trail = AuditTrail(options.audit_path, max_bytes=options.audit_max_bytes)
    audit = Audit(trail, command_name, options.agent if options.local else None)
    try:
        if options.local:
            return from_vault(options.agent, wanted, audit, redactor)
        return from_piper_cloud(options, wanted, audit, redactor)
    except ExecError:
        raise
    except (VaultError, AuditError) as error:  # AuditError: no record, no value
        raise ExecError(f"did not start {command_name}: {error}") from None
    except Exception as error:  # a host shows this stderr as the server's: no traceback
        check = command("check", "--local") if options.local else command("check")
        raise ExecError(
            f"did not start {command_name}: {type(error).__name__}: {error}; `{check}` says "
            "what is wrong"
        ) from None


# --- from the local vault ---


class Refused(Exception):
    """A variable the agent is not given: the variable as audited, a reason code, what to do."""

    def __init__(self, variable: str, reason: str, text: str) -> None:
        super().__init__(text)
        self.variable = variable
        self.reason = reason


def from_vault(
    agent_id: str, wanted: list[Injection], audit: Audit, redactor: Redactor
) -> dict[str, str]:
    """Each injection's value, read from the local vault (`VaultAgent`); the redactor learns it."""
    import sqlite3

    from piper_mcp.local.storage import StorageError, storage_error

    agent = VaultAgent(agent_id)
    try:
        values: dict[str, str] = {}
        given: list[str] = []
        for injection in wanted:
            try:
                name = agent.declared_name(injection.variable)
                value = agent.granted_value(name)
            except Refused as refusal:
                raise audit.refused(refusal.variable, refusal.reason, str(refusal)) from None
            except (StorageError, sqlite3.Error) as error:  # a damaged secret, say
                said = f"no value for {name!r}: {storage_error(error, agent.vault.database)}"
                raise audit.refused(name, STORAGE_UNAVAILABLE, said) from None
            redactor.remember(value)
            values[injection.env_name] = audit.fit(name, value)
            given.append(name)
        audit.provided(given, "piper_raw_secret")
        return values
    finally:
        agent.vault.close()


class VaultAgent:
    """An agent of the local vault (PIPER_HOME), and the values it is granted there.

    Decided as `serve --local`'s in-process backend decides before it hands out a raw
    value, and said in the same words: the agent declares the variable, and the vault's
    user granted it, the grant active. Read straight from the vault: the backend
    (Starlette, the Piper client, an event loop) takes longer to start than many a
    command exec starts. The vault is opened to read, and closed by whoever made this.
    """

    def __init__(self, agent_id: str) -> None:
        import sqlite3

        from piper_mcp.local.files import DATABASE_FILE, check_home
        from piper_mcp.local.storage import storage_error
        from piper_mcp.local.vault import Vault

        self.agent_id = agent_id
        self.home = default_home()
        check_home(self.home)  # one line for a PIPER_HOME this user cannot use
        if not (self.home / DATABASE_FILE).exists():
            raise self.no_vault()
        self.vault = Vault.open(self.home, only_to_read=True)
        try:
            agent = self.vault.agent(agent_id)
            if agent is None:
                raise self.no_agent([known.client_id for known in self.vault.agents()])
            self.declared = list(agent.variables)
            self.user_id = self.vault.local_user_id
        except sqlite3.Error as error:
            self.vault.close()
            raise storage_error(error, self.vault.database) from None
        except BaseException:
            self.vault.close()
            raise

    def declared_name(self, variable: str) -> str:
        """The declared variable `variable` names, exactly or normalized, as `serve` finds it;
        else a `Refused` saying how to declare it."""
        from piper_mcp.piper.names import declared_match

        found = declared_match(variable, self.declared)
        if found is not None:
            return found
        names = ", ".join(self.declared) or "none yet"
        raise Refused(
            variable,
            UNDECLARED,
            f"{quoted(variable)} is not a variable the agent declares (it declares: {names}). "
            f"{self.how_to_grant(variable)}",
        )

    def granted_value(self, name: str) -> str:
        """The value the vault's user granted the agent for `name`; else a `Refused`.

        Checked by secret, as the backend's token and exchange steps check it: a grant of
        the same secret that is not active, under any name, stops this one too.
        """
        from piper_mcp.piper.names import normalize_variable_name

        grants = self.vault.grants(self.user_id, self.agent_id)
        wanted = normalize_variable_name(name)
        grant = next((each for each in grants if each.variable == wanted), None)
        for other in grants:
            if grant and other.credential_id == grant.credential_id and not other.active:
                which = repr(other.variable)
                if other.variable != grant.variable:
                    which += f", the same secret {grant.secret_name!r},"
                raise Refused(
                    name,
                    PERMISSION_DENIED,
                    f"no value for {name!r}: the agent's grant of {which} is {other.status}, "
                    f"not active. {self.how_to_grant(other.variable)}",
                )
        # None: the secret, and with it the grant, went since the grant was read.
        value = self.vault.secret_value(grant.credential_id) if grant else None
        if value is None:
            raise Refused(
                name,
                MAPPING_NOT_FOUND,
                f"no value for {name!r}: The user has not granted this agent the variable "
                f"{name!r}. {self.how_to_grant(name)}",
            )
        return value

    def how_to_grant(self, variable: str) -> str:
        return how_to_grant(self.home, self.agent_id, variable)

    def no_vault(self) -> VaultError:
        return VaultError(no_vault(self.home, self.agent_id))

    def no_agent(self, agents: list[str]) -> VaultError:
        return VaultError(no_agent(self.home, self.agent_id, agents))


# --- from the Piper cloud ---


def from_piper_cloud(
    options: ExecOptions, wanted: list[Injection], audit: Audit, redactor: Redactor
) -> dict[str, str]:
    """Each injection's value from the Piper cloud, as the agent `serve` is configured as."""
    import asyncio
    import logging

    from piper_mcp.piper import AsyncPiperClient, PiperError, load_settings
    from piper_mcp.server.credentials import CredentialService

    # The command's stderr is ours too (a host's log of the server it started): piper-mcp
    # says one line when it fails, and nothing else. (The vault's path logs nothing.)
    quiet = logging.root.manager.disable
    logging.disable()
    try:
        fixed = list(options.variables)
        client = AsyncPiperClient.from_settings(load_settings())
        redactor.watch(client)
        return asyncio.run(resolve(CredentialService(client, lambda: fixed), wanted, audit))
    except PiperError as error:
        raise ExecError(f"did not start {audit.command_name}: {error}") from None
    finally:
        logging.disable(quiet)


async def resolve(
    service: CredentialService, wanted: list[Injection], audit: Audit
) -> dict[str, str]:
    """Each injection's raw value from Piper; at the first refusal, audited, an `ExecError`."""
    import json

    from piper_mcp.piper import PiperError
    from piper_mcp.server.credentials import Refusal, reason_code

    client = service.client
    values: dict[str, str] = {}
    given: list[str] = []
    try:
        for injection in wanted:
            try:
                name = declared(service, injection.variable)
                result = await client.get_from_piper(name, fetch_raw_secret=True)
            except Refusal as refusal:
                raise audit.refused(injection.variable, refusal.reason, str(refusal)) from None
            except PiperError as error:
                said = f"no value for {name!r}: {service.said(name, error)}"
                raise audit.refused(name, reason_code(error), said) from None
            value = result.value if isinstance(result.value, str) else json.dumps(result.value)
            values[injection.env_name] = audit.fit(name, value)
            given.append(name)
    finally:
        await client.aclose()
    audit.provided(given, "piper_raw_secret")
    return values


def declared(service: CredentialService, variable: str) -> str:
    """The declared variable `variable` names; else a `Refusal` saying how to declare it."""
    from piper_mcp.server.credentials import Refusal

    try:
        return service.declared_name(variable)
    except Refusal as refusal:
        if refusal.reason != UNDECLARED:
            raise
    names = ", ".join(service.declared) or "none yet"
    raise Refusal(
        f"{quoted(variable)} is not a variable the agent declares (it declares: {names}). "
        f"{service.grants.how_to_declare(variable)}",
        reason=UNDECLARED,
    )


# --- becoming the command ---


def become(
    program: str, argv: list[str], environment: dict[str, str], scrub: Callable[[str], str]
) -> int:
    """Replace this process with the command (POSIX); elsewhere run it as a child."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "posix":  # Windows: `execve` there starts a new process and ends this one
        return run_as_child(program, argv, environment)
    try:
        os.execve(program, argv, environment)  # noqa: S606 (the user's command is the job)
    except OSError as error:
        said = os.strerror(error.errno) if error.errno else str(error)
        say(f"cannot run {argv[0]}: {said}", scrub)
        return NOT_FOUND if error.errno == errno.ENOENT else NOT_EXECUTABLE


def run_as_child(program: str, argv: list[str], environment: dict[str, str]) -> int:
    """Run the command as a child sharing this process's stdio; its exit code.

    Ctrl-C reaches the child from the console as it reaches this process, which only
    waits on; a SIGTERM (or Ctrl-Break) sent here is passed on. A child ended by a
    signal exits as a shell says it: 128 + the signal's number.
    """
    import signal
    import subprocess

    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []  # signals that came before the child existed

    def pass_on(signum: int, frame: object) -> None:
        if child is None:
            early.append(signum)
        else:
            child.send_signal(signum)

    passed = [signal.SIGTERM]
    if sys.platform == "win32":
        passed.append(signal.SIGBREAK)  # Ctrl-Break
    # The handlers come first, so no signal finds this process between starting the child
    # and being ready to pass it on.
    previous = {signum: signal.signal(signum, pass_on) for signum in passed}
    try:
        child = subprocess.Popen(argv, executable=program, env=environment)  # noqa: S603 (as above)
        for signum in early:
            child.send_signal(signum)
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                continue  # the child had the same Ctrl-C: its exit code says what it did
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code if code >= 0 else 128 - code
