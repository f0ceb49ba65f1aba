"""The exit codes of every command, and the one place where an error becomes one."""

from __future__ import annotations

import re
from enum import IntEnum

import typer
from rich.markup import escape

from latentsync_mps.cli.console import errors
from latentsync_mps.pack.errors import StackError, TargetTorchError
from latentsync_mps.port.errors import (
    BadInput,
    ManifestCorrupt,
    NotPatched,
    NotUpstream,
    PackInvalid,
    PortError,
    Refused,
    TreeBusy,
    WriteFailed,
)


class Exit(IntEnum):
    """The exit codes of every command. Each member's docstring is its meaning, for a person:
    scripts/gen_reference.py writes docs/reference/exit-codes.md from them."""

    OK = 0
    """ok"""
    INTERNAL = 1
    """internal error: a bug in lsync-port (run with `LSYNC_PORT_DEBUG=1` for the traceback)"""
    USAGE = 2
    """bad path, option, profile or rule id; or the tree cannot be written (full disk, permission,
    read-only file system): one line says which file, that nothing was changed, and what to do"""
    NOT_UPSTREAM = 3
    """not a recognised upstream tree (LatentSync or ComfyUI-LatentSyncWrapper)"""
    NOT_PATCHED = 4
    """`revert` on a tree lsync-port has not patched"""
    PARTIAL = 5
    """applied, but some files could not be processed (listed: syntax errors, symlinks, files
    edited by hand)"""
    STRICT = 6
    """`--strict`: drift or residue found"""
    REFUSED = 7
    """`revert` kept files edited by hand since apply (`--force` restores them)"""
    MANIFEST = 8
    """`.lsync-port/manifest.json` is corrupt or names paths outside the tree"""
    RULES = 9
    """a rule file under `patches/` is invalid"""
    DOCTOR_BLOCKER = 10
    """`doctor` found a blocker"""
    VERIFY_FAILED = 11
    """`verify` failed: the port does not run on that device (the report says why)"""
    LOCKED = 12
    """another `apply` or `revert` holds the tree's lock (`.lsync-port/lock`, like git's
    `index.lock`); it says which process (pid, host, command, since). The lock of a killed process
    is taken over; `LSYNC_PORT_LOCK_WAIT` (seconds, default 5) is how long to wait first"""
    FORECAST_FAILED = 13
    """`forecast` failed: the shape-only run did not finish (the report says where)"""


EXIT_CODES_HELP = """
Exit codes: 0 ok · 2 bad path, option, profile or rule id, or a tree that cannot be written
(full disk, permission, read-only; nothing changed) · 3 not a recognised upstream tree ·
4 tree not patched (revert) · 5 applied, but some files could not be processed ·
6 --strict and drift or residue found · 7 revert kept files edited by hand (use --force) ·
8 corrupt manifest · 9 invalid rule file · 10 doctor found a blocker · 11 verify failed ·
12 another apply or revert is running on the tree · 13 forecast failed ·
1 internal error (a bug: please report it).
"""


def exit_codes_named(command):
    """Fill `{Exit.NAME}` in a command's docstring with the code, so that its --help never states a
    number the Exit enum does not give (tests/test_help_exit_codes.py)."""
    command.__doc__ = re.sub(r"\{Exit\.(\w+)\}", lambda m: str(Exit[m.group(1)].value), command.__doc__ or "")
    return command


def fail(message: str, code: Exit) -> typer.Exit:
    errors.print(f"[red]error:[/] {escape(message)}", highlight=False)  # 'lsync-port[verify]' is not markup
    return typer.Exit(int(code))


# The exit code of each error type below the CLI. A type not named here means that of its nearest
# named base (a forecast's bad input is a BadInput).
EXIT_OF_ERROR: dict[type[Exception], Exit] = {
    BadInput: Exit.USAGE,
    WriteFailed: Exit.USAGE,
    NotUpstream: Exit.NOT_UPSTREAM,
    NotPatched: Exit.NOT_PATCHED,
    Refused: Exit.REFUSED,
    ManifestCorrupt: Exit.MANIFEST,
    PackInvalid: Exit.RULES,
    TreeBusy: Exit.LOCKED,
    StackError: Exit.USAGE,
    TargetTorchError: Exit.USAGE,
}


def exit_code_of(error: Exception) -> Exit:
    return next(EXIT_OF_ERROR[kind] for kind in type(error).__mro__ if kind in EXIT_OF_ERROR)


def engine_call(function, *args, **kwargs):
    """Run an engine function, turning its expected errors into messages and exit codes."""
    try:
        return function(*args, **kwargs)
    except (PortError, StackError, TargetTorchError) as error:
        raise fail(str(error), exit_code_of(error)) from None
    except PermissionError as error:
        raise fail(f"permission denied: {error.filename} (nothing more was written)", Exit.USAGE) from None
