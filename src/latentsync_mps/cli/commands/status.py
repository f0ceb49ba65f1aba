"""`lsync-port status`: is the tree patched, by which version, what differs."""

from __future__ import annotations

import json

import typer

from latentsync_mps.cli.app import JsonOpt, TreeArg
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import engine_call, exit_codes_named

ORDER = 30  # its place in `lsync-port --help`


def status(tree: TreeArg, json_out: JsonOpt = False) -> None:
    """Tell whether TREE is patched, by which version, and which files differ from the manifest."""
    from latentsync_mps.port import transaction
    from latentsync_mps.render import plan as report

    result = engine_call(transaction.status, tree)
    if json_out:
        print(json.dumps(report.status_to_json(result), indent=2))
        return
    manifest = result.manifest
    if manifest is None:
        console.print(f"{result.tree}: not patched by lsync-port.")
        return
    console.print(
        f"{result.tree}: [bold]{result.summary}[/] by lsync-port {manifest.tool_version} "
        f"(profile {manifest.profile}, release {manifest.release or 'unrecognised'}, {len(manifest.rules)} rules)."
    )
    from latentsync_mps import __version__

    if manifest.tool_version != __version__:
        console.print(f"This is lsync-port {__version__}: `lsync-port apply {result.tree}` upgrades the port.")
    for f in result.files:
        if f.state != "patched":
            console.print(f"  {f.path}: {f.state}")
    if (result.tree / ".git").exists():  # what a git pull would do to the port (update.py)
        from latentsync_mps.features.update import diagnose

        advice = diagnose(result.tree).advice(result.tree)
        if advice:
            console.print(advice, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(status))
