"""A plain `lsync-port apply` on a tree nothing touched since the last apply, answered before typer
parses anything."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from typer.models import ArgumentInfo, OptionInfo

from latentsync_mps.cli.commands.apply import apply, rule_ids_from, show_plan, stored_plan
from latentsync_mps.cli.inputs import locked


class _NotForTheEarlyCheck(Exception):
    """The command line is not a plain `apply`: typer parses it (and explains any mistake)."""


class _ApplyOptions(argparse.ArgumentParser):
    """`apply`'s options, for the no-op check that runs before typer (see `reapply_early`), read from
    the typer command's own parameters so that the two cannot differ: the argument, each flag (a
    bool option) and each option with a value, under the command's own names."""

    def __init__(self) -> None:
        super().__init__(prog="lsync-port apply", add_help=False, allow_abbrev=False, exit_on_error=False)
        hints = typing.get_type_hints(apply, include_extras=True)
        for name, hint in hints.items():
            if name == "return":
                continue
            info = next(m for m in hint.__metadata__ if isinstance(m, (ArgumentInfo, OptionInfo)))
            if isinstance(info, ArgumentInfo):
                self.add_argument(name, type=Path)
                continue
            # In an Annotated hint, typer reads an option's first name from the `default` slot.
            flags = [d for d in (info.default, *info.param_decls) if isinstance(d, str) and d.startswith("-")]
            if typing.get_args(hint)[0] is bool:
                self.add_argument(*flags, dest=name, action="store_true")
            else:
                self.add_argument(*flags, dest=name)

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
    show_plan(plan, args.dry_run, args.diff, args.json_out, args.strict)
    return True
