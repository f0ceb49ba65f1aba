"""`lsync-port list-rules`, `explain` and `check-rules`: the rule packs, for a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, ProfileOpt
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, exit_codes_named, fail
from latentsync_mps.cli.inputs import load_pack

ORDER = 90  # its place in `lsync-port --help`


def list_rules(profile: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """List the rules of each profile: id, kind, releases and what they are for."""
    from rich.table import Table

    pack = load_pack()
    if profile is not None and profile not in pack.profiles:
        raise fail(f"unknown profile '{profile}' (known: {', '.join(sorted(pack.profiles))})", Exit.USAGE)
    chosen = [p for p in pack.profiles.values() if profile in (None, p.name)]
    if json_out:
        print(
            json.dumps(
                {
                    p.name: [
                        {
                            "id": r.id,
                            "kind": r.kind,
                            "releases": str(r.releases) or "all",
                            "default": r.default,
                            "summary": r.summary,
                        }
                        for r in p.rules
                    ]
                    for p in chosen
                },
                indent=2,
            )
        )
        return
    from latentsync_mps.render.plan import add_rule_id_column

    # Rule ids are never cut (they are pasted into `explain`); below 120 columns the kind goes.
    with_kind = console.width >= 120
    for p in chosen:
        table = Table(title=f"{p.name} ({p.title})", title_justify="left", show_edge=False)
        add_rule_id_column(table, "rule", [r.id for r in p.rules])
        if with_kind:
            table.add_column("kind", no_wrap=True)
        table.add_column("releases", no_wrap=True)
        # The summary takes what is left (rich would not fold it below its longest word).
        taken = [max(len(r.id) for r in p.rules) + 1, max(len(str(r.releases) or "all") for r in p.rules)]
        taken += [max(len(r.kind) for r in p.rules)] if with_kind else []
        room = console.width - sum(taken) - 3 * len(taken) - 2
        table.add_column("summary", overflow="fold", width=max(room, 20))
        for r in p.rules:
            rule = r.id + ("" if r.default else " (off by default)")
            table.add_row(rule, *([r.kind] if with_kind else []), str(r.releases) or "all", r.summary)
        console.print(table)


def explain(rule_id: Annotated[str, typer.Argument(help="A rule id from list-rules.")]) -> None:
    """Show one rule in full: why it exists, where it applies, and its before/after examples."""
    pack = load_pack()
    rule = pack.rule(rule_id)
    if rule is None:
        raise fail(f"no rule '{rule_id}'; `lsync-port list-rules` lists them", Exit.USAGE)
    console.print(f"[bold]{rule.id}[/] ({rule.kind}, profile {rule.profile}, releases {str(rule.releases) or 'all'})")
    console.print(rule.summary, highlight=False)
    console.print(f"files: {', '.join(rule.files)}" + (f"; except {', '.join(rule.exclude)}" if rule.exclude else ""))
    for expect in rule.expect:
        console.print(
            f"expected: at least {expect.min} match(es) in {expect.file} for releases {str(expect.releases) or 'all'}"
        )
    console.print(f"defined in {rule.source}")
    for example in rule.examples:
        console.print("\n[bold]before[/]" + (f" ({example.path})" if example.path else ""))
        console.print(example.before, markup=False, highlight=False, end="")
        if example.report is not None:
            console.print(f"[dim](reported at line(s): {', '.join(map(str, example.report)) or 'none'})[/]")
        elif example.after is None:
            console.print("[dim](stays unchanged)[/]")
        else:
            console.print("[bold]after[/]")
            console.print(example.after, markup=False, highlight=False, end="")


def check_rules(
    directory: Annotated[
        Path,
        typer.Argument(
            help="A rule pack: the folder you would give as LSYNC_PORT_PATCHES (with <profile>/profile.toml).",
            show_default=False,
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Validate a rule pack and run every example of every rule (the counterpart of `fixit test`).

    Loads DIR as LSYNC_PORT_PATCHES=DIR would, so a malformed file fails here with the file and
    rule it concerns (exit {Exit.RULES}). Then runs each example: a rewriting rule's `before` must become its
    `after` (and stay so when run again), a detection-only rule's `before` must be reported at the
    lines its `report` lists. Prints pass/fail per example; exits {Exit.RULES} when any fails.
    """
    from latentsync_mps.pack.errors import RuleFileError
    from latentsync_mps.port.rulecheck import check_pack
    from latentsync_mps.port.rulepack import load

    if not directory.is_dir():
        raise fail(f"{directory}: no such directory (give a rule pack folder)", Exit.USAGE)
    try:
        pack = load(directory)
    except RuleFileError as error:
        raise fail(str(error), Exit.RULES) from None
    results = list(check_pack(pack))
    failed = [r for r in results if r.problem is not None]
    if json_out:
        rows = [
            {"example": r.name, "source": r.rule.source, "ok": r.problem is None, "problem": r.problem} for r in results
        ]
        print(json.dumps({"examples": rows, "failed": len(failed)}, indent=2))
    else:
        for r in results:
            mark = "[green]pass[/]" if r.problem is None else "[red]FAIL[/]"
            console.print(f"{mark} {r.name}", highlight=False)
            if r.problem is not None:
                console.print(f"     {r.rule.source}: {r.problem}", markup=False, highlight=False)
        console.print(f"{len(results) - len(failed)} of {len(results)} examples pass", highlight=False)
    if failed:
        raise typer.Exit(int(Exit.RULES))


def register(app: typer.Typer) -> None:
    app.command("list-rules")(exit_codes_named(list_rules))
    app.command()(exit_codes_named(explain))
    app.command("check-rules")(exit_codes_named(check_rules))
