"""`lsync-port revert`: restore every file apply changed."""

from __future__ import annotations

from typing import Annotated

import typer

from latentsync_mps.cli.app import TreeArg
from latentsync_mps.cli.console import console, errors
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named, fail
from latentsync_mps.cli.inputs import locked

ORDER = 40  # its place in `lsync-port --help`


def revert(
    tree: TreeArg,
    force: Annotated[
        bool, typer.Option("--force", help="Also restore files edited by hand since apply (their edits are lost).")
    ] = False,
) -> None:
    """Restore every file apply changed, byte for byte, and remove what it added."""
    from latentsync_mps.port import transaction

    with locked(tree, "revert"):
        result = engine_call(transaction.revert, tree, force)
    for path in result.restored:
        console.print(f"restored {path}")
    for path in result.removed:
        console.print(f"removed  {path}")
    for problem in result.refused:
        errors.print(f"[yellow]kept[/] {problem.path}: {problem.reason}")
    if result.refused:
        raise fail(
            f"{len(result.refused)} file(s) not restored; the manifest is kept so revert can be run again.",
            Exit.REFUSED,
        )
    console.print(f"[green]Reverted[/] {len(result.restored)} file(s), removed {len(result.removed)}.")


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(revert))
