"""`lsync-port demo`: port the built-in example and show the report."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named, fail
from latentsync_mps.cli.inputs import load_pack

ORDER = 100  # its place in `lsync-port --help`


def demo(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Where to copy the example (default: a new temporary folder).", show_default=False),
    ] = None,
    diff: Annotated[bool, typer.Option("--diff", help="Also print the diff of every ported file.")] = False,
    show_new: Annotated[
        bool, typer.Option("--show-new", help="With --diff, also the files the port adds (the runtime helper).")
    ] = False,
) -> None:
    """Copy the built-in example tree to DIRECTORY, port it, and show the report (--diff: and the diff)."""
    from latentsync_mps.pack.paths import example_tree
    from latentsync_mps.port.planning import make_plan
    from latentsync_mps.port.transaction import commit
    from latentsync_mps.render import plan as report

    target = Path(tempfile.mkdtemp(prefix="lsync-port-demo-")) / "latentsync" if directory is None else directory
    if target.exists() and any(target.iterdir()):
        raise fail(f"{target} exists and is not empty; give a new folder", Exit.USAGE)
    shutil.copytree(example_tree(), target, dirs_exist_ok=True)
    console.print(f"Copied the example LatentSync-shaped tree to {target}\n")
    plan = engine_call(make_plan, target, load_pack())
    engine_call(commit, plan)
    report.render_plan(console, plan, written=True, show_diff=diff or show_new, show_new=show_new)
    console.print(f"\nNext: `lsync-port status {target}`, then `lsync-port revert {target}`.")


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(demo))
