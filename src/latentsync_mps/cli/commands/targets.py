"""`lsync-port targets`: the torch releases, host stacks and upstream releases known."""

from __future__ import annotations

import json

import typer

from latentsync_mps.cli.app import JsonOpt
from latentsync_mps.cli.console import console

ORDER = 80  # its place in `lsync-port --help`


def targets(json_out: JsonOpt = False) -> None:
    """List what lsync-port knows about the Macs and code it ports for, each with its source and date.

    torch releases: one MPS table each (what `verify --device mps-sim --target-torch X` judges by), derived
    from that release's macOS arm64 wheel; "min macOS" is the oldest macOS the wheel installs on (from
    2.12 on: macOS 14), and the simulated Mac runs at least that. Host stacks: the Python environments
    ComfyUI runs the wrapper in (ComfyUI Desktop's bundled one, a manual install). Upstream releases and
    wrapper commits: the trees `apply` recognises. Last: what the package registry and the upstream
    repositories served when last checked, and the command that refreshes it all.
    """
    from latentsync_mps.features.targets import gather
    from latentsync_mps.pack.paths import patches_dir
    from latentsync_mps.render.targets import render

    data = gather(patches_dir())
    if json_out:
        print(json.dumps(data, indent=2))
    else:
        render(console, data)


def register(app: typer.Typer) -> None:
    app.command()(targets)
