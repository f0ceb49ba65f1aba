"""What the commands make of their inputs before a feature runs: the rule pack, the interpreter,
the needs of the tree's interpreter, and the tree's lock."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from latentsync_mps.cli.console import errors
from latentsync_mps.cli.exits import Exit, engine_call, fail


def load_pack():
    from latentsync_mps.pack.errors import RuleFileError
    from latentsync_mps.pack.paths import patches_dir
    from latentsync_mps.port.rulepack import load

    try:
        return load(patches_dir())
    except RuleFileError as error:
        raise fail(str(error), Exit.RULES) from None


def interpreter(python: str | None) -> str | None:
    """--python as the absolute path the child is started with (it runs in a folder of its own, where a
    relative path names nothing): a path, else a name on PATH."""
    if python is None:
        return None
    candidate = Path(python).expanduser()
    if candidate.is_file():
        return str(candidate.absolute())
    found = shutil.which(python) if os.sep not in python else None
    if found is None:
        raise fail(f"--python {python}: no such interpreter", Exit.USAGE)
    return found


def check_needs(command: str, tree: Path, python: str | None, code: Exit) -> None:
    """One line, before the run, when the interpreter lacks what the command imports (needs.py)."""
    from latentsync_mps.host.needs import Unavailable, check

    try:
        check(command, tree, python)
    except Unavailable as error:
        raise fail(str(error), code) from None


@contextmanager
def locked(tree: Path, command: str):
    """The tree's lock for one apply or revert; says so when it took over a dead process's lock."""
    from latentsync_mps.port.manifest import describe_holder
    from latentsync_mps.port.transaction import lock_tree

    lock = engine_call(lock_tree, tree, command)
    try:
        if lock.stale:
            errors.print(
                f"[yellow]note:[/] took over the lock of a run that had died ({describe_holder(lock.stale)})",
                highlight=False,
            )
        yield lock
    finally:
        lock.release()
