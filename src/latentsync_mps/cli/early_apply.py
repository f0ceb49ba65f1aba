"""A plain `lsync-port apply` on a tree nothing touched since the last apply, answered before typer
parses anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentsync_mps.cli.commands.apply import rule_ids_from, show_plan, stored_plan
from latentsync_mps.cli.inputs import locked


class _NotForTheEarlyCheck(Exception):
    """The command line is not a plain `apply`: typer parses it (and explains any mistake)."""


class _ApplyOptions(argparse.ArgumentParser):
    """`apply`'s options, for the no-op check that runs before typer (see `reapply_early`).
    tests/test_noop_fast_path.py checks that they are the typer command's."""

    def __init__(self) -> None:
        super().__init__(prog="lsync-port apply", add_help=False, allow_abbrev=False, exit_on_error=False)
        self.add_argument("tree", type=Path)
        for flag in ("--dry-run", "--diff", "--json", "--strict"):
            self.add_argument(flag, action="store_true")
        self.add_argument("--rules")
        self.add_argument("--profile")

    def error(self, message: str):  # argparse would print and exit; typer has the last word instead
        raise _NotForTheEarlyCheck(message)


def reapply_early(argv: list[str]) -> bool:
    """Answer `lsync-port apply TREE ...` on a tree nothing touched since the last apply, before
    typer parses anything: typer builds a pydantic validator for every parameter of the command it
    runs, which takes longer (0.15 s here) than this whole answer. True when it answered (the
    report is printed; typer.Exit carries a non-zero exit code); False: run typer as usual."""
    if not argv or argv[0] != "apply":
        return False
    try:
        args = _ApplyOptions().parse_args(argv[1:])
    except (_NotForTheEarlyCheck, argparse.ArgumentError):
        return False
    rule_ids = rule_ids_from(args.rules)
    # A first look without the lock, so that real work goes to typer at once; then, for a real
    # apply, the answer is only given while holding the lock, as apply does.
    plan = stored_plan(args.tree, args.profile, rule_ids)
    if plan is None:
        return False
    if not args.dry_run:
        with locked(args.tree, "apply"):
            plan = stored_plan(args.tree, args.profile, rule_ids)
            if plan is None:
                return False
    show_plan(plan, args.dry_run, args.diff, args.json, args.strict)
    return True
