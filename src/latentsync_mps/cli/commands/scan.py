"""`lsync-port scan`: what is still CUDA-only, and drift."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, ProfileOpt, TreeArg
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named
from latentsync_mps.cli.inputs import load_pack

ORDER = 20  # its place in `lsync-port --help`


def scan(
    tree: TreeArg,
    json_out: JsonOpt = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help=f"Exit {Exit.STRICT.value} on CUDA residue on the inference path or on drift."),
    ] = False,
    profile: ProfileOpt = None,
) -> None:
    """List what in TREE is still CUDA-only, with file:line, why and the fix, and which rules would
    match nothing where they are expected (drift). Changes nothing."""
    from latentsync_mps.port import scanning
    from latentsync_mps.render import plan as report

    result = engine_call(scanning.scan, tree, load_pack(), profile)
    residue = [f for f in result.findings if f.severity == "error" and result.in_scope(f)]
    if json_out:
        print(json.dumps(report.scan_to_json(result), indent=2))
    else:
        scope = f"profile {result.profile.name}" if result.profile else "no known profile: every file counts"
        if result.profile is not None:
            scope += f" · release {result.release.name if result.release else 'not recognised'}"
        console.print(f"[bold]scan[/] {result.tree} · {scope}")
        report.render_drift(console, result.drift)
        report.render_findings(console, residue, "CUDA-only on the inference path")
        others = [f for f in result.findings if f not in residue]
        report.render_findings(console, others, "Elsewhere, and warnings")
        report.render_own_files(console, result.own)
        report.render_problems(console, result.problems)
    if strict and (residue or result.drift):
        raise typer.Exit(int(Exit.STRICT))


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(scan))
