"""`lsync-port update`: revert, git pull, apply."""

from __future__ import annotations

import typer

from latentsync_mps.cli.app import TreeArg
from latentsync_mps.cli.commands.apply import show_plan
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import engine_call, exit_codes_named
from latentsync_mps.cli.inputs import load_pack, locked

ORDER = 50  # its place in `lsync-port --help`


def update_command(tree: TreeArg) -> None:
    """Bring a ported git checkout to upstream's newer commit and port it again: revert, git pull, apply.

    Files you edited since apply are kept: update stops before changing anything and names them
    (exit {Exit.REFUSED}). A tree that ComfyUI Manager (or `git pull`) already updated under the
    port is ported again from the code git left. When the pull fails, the tree is ported again on
    the commit it had, and git's message says why (exit {Exit.USAGE}).
    """
    from latentsync_mps.features.update import update

    with locked(tree, "update"):
        result, plan = engine_call(update, tree, load_pack())
    moved = f"{result.before} → {result.after}" if result.before != result.after else f"{result.after}: no newer commit"
    stale = f"; {len(result.stale)} file(s) git had already replaced" if result.stale else ""
    console.print(f"update {tree}: {moved}; the port taken off ({len(result.restored)} file(s)){stale}, then:")
    show_plan(plan, False, False, False, False)


def register(app: typer.Typer) -> None:
    app.command("update")(exit_codes_named(update_command))
