"""The files of a local vault, created owner-only: folders 0700, files 0600."""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path

from piper_mcp.invocation import command
from piper_mcp.local.errors import VaultError

DATABASE_FILE = "vault.sqlite3"
KEY_FILE = "vault.key"
# `${PIPER_HOME}`, `$HOME/...`, `%LOCALAPPDATA%`: a host that does not expand variables in
# its configuration passes them as they are, and as a relative folder they would be a
# new, empty vault wherever the host happens to start the server (so is any relative one).
UNEXPANDED_VARIABLE = re.compile(r"\$\{?[A-Za-z_]|%[A-Za-z_]\w*%")


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the start (never briefly world-readable)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def check_home(home: Path) -> None:
    """Raise a one-line `VaultError` if this user cannot keep a vault in `home`.

    Said before anything touches the folder: a file where the folder should be, a
    folder that cannot be created, or another user's folder are fixed by choosing
    another PIPER_HOME, which a traceback about `vault.sqlite3` does not say.
    """
    check_named(home)
    try:
        found = home.stat()
    except FileNotFoundError:
        _check_creatable(home)
        return
    except NotADirectoryError:
        _check_creatable(home)  # names the file in the way
        return
    except PermissionError:
        raise VaultError(
            f"PIPER_HOME {home} cannot be reached by this user (a folder on its path is "
            "not searchable): set PIPER_HOME to a folder of your own"
        ) from None
    if not home.is_dir():
        raise VaultError(
            f"PIPER_HOME {home} is a file, not a folder: move it away, or set PIPER_HOME "
            "to a folder"
        )
    _check_access(home, found.st_uid, os.R_OK | os.X_OK, "chmod u+rwx")
    for name in (DATABASE_FILE, KEY_FILE):
        path = home / name
        if path.exists():
            _check_access(path, path.stat().st_uid, os.R_OK, "chmod u+rw")


def check_named(home: Path) -> None:
    """Raise a one-line `VaultError` if PIPER_HOME names no folder a host would find again:
    the examples' placeholder, a variable left unexpanded, or a relative path."""
    if "path/to/" in home.as_posix():
        raise VaultError(
            f"PIPER_HOME is {home}, the example value from a host configuration: replace it "
            f"with your vault's folder, which `{command('local', 'home')}` prints"
        )
    if UNEXPANDED_VARIABLE.search(str(home)):
        raise VaultError(
            f"PIPER_HOME is {home}, a variable the host did not expand: give the vault's "
            f"folder itself, which `{command('local', 'home')}` prints"
        )
    if not home.is_absolute():
        raise VaultError(
            f"PIPER_HOME is {home}, a relative folder: a host starts its servers in a folder "
            "of its own choosing, where this names another, empty vault; give the absolute "
            f"path (from here: {home.absolute()})"
        )


def _check_access(path: Path, owner: int, needed: int, chmod: str) -> None:
    """Another user's file this user cannot read and write, or one of ours it cannot read.

    One of ours that is only read-only is left to `storage_error`, which says so when a
    write fails: a read-only vault still serves what needs no write.
    """
    ours = owner == getattr(os, "getuid", lambda: owner)()
    if os.access(path, needed) and (ours or os.access(path, os.W_OK)):
        return
    if ours:
        raise VaultError(
            f"{path} (PIPER_HOME) cannot be read by you: `{chmod} {path}`, or set PIPER_HOME "
            "to a folder of your own"
        )
    raise VaultError(
        f"{path} (PIPER_HOME) belongs to {_owner(owner)}, and this user "
        f"({getpass.getuser()!r}) cannot read and write it: run piper-mcp as its owner, or "
        "set PIPER_HOME to a folder of your own"
    )


def _check_creatable(home: Path) -> None:
    """`home` does not exist: the nearest folder above it must let this user create it."""
    for parent in home.parents:
        if parent.is_dir():
            if os.access(parent, os.W_OK | os.X_OK):
                return
            raise VaultError(
                f"cannot create PIPER_HOME {home}: this user may not write in {parent}; "
                "set PIPER_HOME to a folder you can create"
            )
        if parent.exists():
            raise VaultError(
                f"cannot create PIPER_HOME {home}: {parent} is a file; set PIPER_HOME to a "
                "folder you can create"
            )


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r}"
    except (ImportError, KeyError):
        return f"user id {uid}"
