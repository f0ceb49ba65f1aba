"""`lsync-port apply`: port a tree, and the report that apply and update print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, ProfileOpt, TreeArg
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named
from latentsync_mps.cli.inputs import load_pack, locked

ORDER = 10  # its place in `lsync-port --help`


def apply(
    tree: TreeArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Also print a unified diff of every change.")] = False,
    json_out: JsonOpt = False,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Only these rule ids, comma-separated (see list-rules).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help=f"Exit {Exit.STRICT.value} when a rule drifted or CUDA residue remains.")
    ] = False,
    profile: ProfileOpt = None,
) -> None:
    """Rewrite TREE so that it runs on Apple Silicon (and still on CUDA and CPU).

    Originals are backed up under TREE/.lsync-port/ with a manifest; applying again changes
    nothing; a tree patched by another lsync-port version is upgraded from its originals.
    """
    from latentsync_mps.port.noop import StoredPlan
    from latentsync_mps.port.transaction import commit

    rule_ids = rule_ids_from(rules)

    def plan_it():
        stored = stored_plan(tree, profile, rule_ids)
        if stored is not None:
            return stored
        from latentsync_mps.port.planning import make_plan  # libcst: only when there is work to do

        return engine_call(make_plan, tree, load_pack(), profile, rule_ids)

    if dry_run:
        plan = plan_it()
    else:
        with locked(tree, "apply"):  # from reading the manifest to writing it: one process at a time
            plan = plan_it()
            if not isinstance(plan, StoredPlan):
                engine_call(commit, plan)
    show_plan(plan, dry_run, diff, json_out, strict)


def rule_ids_from(rules: str | None) -> list[str] | None:
    return [r.strip() for r in rules.split(",") if r.strip()] if rules else None


def stored_plan(tree: Path, profile: str | None, rule_ids: list[str] | None):
    """A tree and rules as the last apply left them: its report, before any rule is loaded
    (port/noop.py); None when there is work to do."""
    from latentsync_mps.pack.paths import patches_dir
    from latentsync_mps.port import noop

    return noop.stored_plan(tree, patches_dir(), profile, rule_ids)


def show_plan(plan, dry_run: bool, diff: bool, json_out: bool, strict: bool) -> None:
    """apply's report and exit code."""
    from latentsync_mps.render import plan as report

    if json_out:
        print(json.dumps(report.plan_to_json(plan, written=not dry_run and bool(plan.writes)), indent=2))
    else:
        report.render_plan(console, plan, written=not dry_run, show_diff=diff)
    if plan.problems:
        raise typer.Exit(int(Exit.PARTIAL))
    if strict and (plan.drift or plan.residue):
        raise typer.Exit(int(Exit.STRICT))


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(apply))
