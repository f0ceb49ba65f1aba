"""Turning plans, scans and status into what a person reads (rich) or a machine reads (JSON)."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from latentsync_mps import __version__

if TYPE_CHECKING:  # annotations only: a no-op re-apply renders its stored report without the engine
    from latentsync_mps.port.noop import StoredPlan
    from latentsync_mps.port.outcome import Drift, Finding
    from latentsync_mps.port.planning import Plan
    from latentsync_mps.port.scanning import ScanResult
    from latentsync_mps.port.transaction import TreeStatus
    from latentsync_mps.port.tree import FileProblem


def plan_to_json(plan: Plan | StoredPlan, written: bool) -> dict[str, Any]:
    return {
        "tool_version": __version__,
        "tree": str(plan.tree),
        "profile": plan.profile.name,
        "release": plan.release.name if plan.release else None,
        "written": written,
        "unchanged": plan.unchanged,
        "files": [
            {"path": f.path, "created": f.pristine is None, "changes": len(f.changes), "write_needed": f.needs_write}
            for f in plan.files
        ],
        "restored": [f.path for f in plan.restores],
        "changes": [c.__dict__ for c in plan.changes],
        "matches": {rule.id: plan.matches.get(rule.id, 0) for rule in plan.rules},
        "drift": [d.__dict__ for d in plan.drift],
        "residue": [f.to_json() for f in plan.residue],
        "findings": [f.to_json() for f in plan.findings],
        "problems": [p.__dict__ for p in plan.problems],
        "warnings": plan.warnings,
    }


def add_rule_id_column(table: Table, header: str, ids: list[str]) -> None:
    """A column of rule ids, never cut: a person pastes them into `lsync-port explain`. It is as
    wide as the longest id (and its comma), so rich wraps a list of ids between them; the other
    columns fold or wrap at 80 columns (and in a pipe, which rich treats as 80 columns)."""
    table.add_column(header, min_width=max(map(len, ids), default=0) + 1, overflow="fold")


def render_plan(
    console: Console, plan: Plan | StoredPlan, written: bool, show_diff: bool, show_new: bool = True
) -> None:
    release = (
        f"release {plan.release.name} ({plan.release.commit})"
        if plan.release
        else "release not recognised (all rules of the profile used)"
    )
    profile = f"profile [bold]{plan.profile.name}[/] ({plan.profile.title})"
    console.print(f"[bold]lsync-port {__version__}[/] · {plan.tree} · {profile} · {release}")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")

    if plan.files or plan.restores:
        render_files(console, plan)

    rules = Table(title="Matches per rule", title_justify="left", show_edge=False)
    add_rule_id_column(rules, "rule", [rule.id for rule in plan.rules])
    rules.add_column("kind", overflow="fold")
    rules.add_column("matches", justify="right", no_wrap=True)
    rules.add_column("drift", no_wrap=True)
    drifted = {d.rule_id for d in plan.drift}
    for rule in plan.rules:
        mark = "[red]yes[/]" if rule.id in drifted else ""
        rules.add_row(rule.id, rule.kind, str(plan.matches.get(rule.id, 0)), mark)
    console.print(rules)

    render_drift(console, plan.drift)
    render_findings(console, plan.residue, "Residue on the inference path (CUDA constructs not converted)")
    warnings = [f for f in plan.findings if f.severity != "error"]
    if warnings:
        render_findings(console, warnings, "Warnings on the inference path (may break depending on data)")
    console.print(
        "[dim]Code outside the inference path (training, evaluation) is not counted: `lsync-port scan` lists it.[/]"
    )
    render_problems(console, plan.problems)
    if show_diff:
        render_diff(console, plan, show_new)

    changed = [f for f in plan.files if f.pristine is not None]
    summary = (
        f"{len(changed)} file(s) ported, {len(plan.changes)} rewrite(s), {len(plan.drift)} drift, "
        f"{len(plan.residue)} residue, {len(plan.problems)} problem(s)."
    )
    if plan.unchanged:
        last = plan.summary
        console.print(
            f"[green]Nothing to do:[/] the tree and the rules are as the last apply left them "
            f"({last.get('files', 0)} file(s) ported, {last.get('rewrites', 0)} rewrite(s), {len(plan.drift)} drift, "
            f"{len(plan.residue)} residue, {len(plan.problems)} problem(s))."
        )
    elif not plan.writes:
        console.print(f"[green]Nothing to write:[/] the tree already is as this version ports it. {summary}")
    elif written:
        console.print(f"[green]Written.[/] {summary} Undo with: lsync-port revert {plan.tree}")
    else:
        console.print(f"[cyan]Dry run: nothing written.[/] {summary}")


def render_files(console: Console, plan: Plan | StoredPlan) -> None:
    """One row per file: path, number of changes, rule ids. Where path, count and the longest id do
    not fit side by side (80 columns, a pipe), the count column goes (the summary line has the
    total) before a path or an id is cut; on a narrower screen still, paths fold."""
    ids = [c.rule_id for f in plan.files for c in f.changes]
    path_width = max(len(f.path) for f in plan.files + plan.restores)
    id_width = max(map(len, ids), default=0) + 1  # and its comma
    with_counts = console.width >= path_width + len("changes") + id_width + 8  # padding, separators
    fits = console.width >= path_width + id_width + 5
    table = Table(title="Files", title_justify="left", show_edge=False)
    table.add_column("file", overflow="fold", width=path_width if fits else None)
    if with_counts:
        table.add_column("changes", justify="right", no_wrap=True)
    room = console.width - path_width - (len("changes") + 8 if with_counts else 5)
    table.add_column("rules", min_width=id_width, max_width=max(room, id_width), overflow="fold")
    for f in plan.files:
        rules = ", ".join(sorted({c.rule_id for c in f.changes})) or "runtime helper"
        count = ("new" if f.pristine is None else str(len(f.changes))) + ("" if f.needs_write else " (already)")
        if with_counts:
            table.add_row(f.path, count, rules)
        else:
            table.add_row(f.path, rules if f.pristine is not None else f"{rules} ({count})")
    for f in plan.restores:
        table.add_row(f.path, *(["restored"] if with_counts else []), "restored: no rule changes it any more")
    console.print(table)


def render_drift(console: Console, drift: list[Drift]) -> None:
    if drift:
        console.print(f"[red]Drift:[/] {len(drift)} expected match(es) not found (upstream moved under these rules):")
        for d in drift:
            console.print(f"  {d.rule_id}: expected at least {d.expected} in {d.file}, found {d.found}")


def render_findings(console: Console, findings: list[Finding], title: str) -> None:
    if not findings:
        console.print(f"{title}: none.")
        return
    counts = Counter(f.kind for f in findings)
    console.print(f"{title}: {len(findings)} ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})")
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        console.print(f"  [{colour}]{f.path}:{f.line}[/] {f.kind}: {f.code}", highlight=False)
        console.print(f"      {f.why}; fix: {f.fix}", highlight=False, style="dim")


def render_own_files(console: Console, own: list[str]) -> None:
    if own:
        console.print(
            f"lsync-port's runtime helper: {', '.join(own)}: not scanned (added by apply; revert removes it).",
            highlight=False,
        )


def render_problems(console: Console, problems: list[FileProblem]) -> None:
    for p in problems:
        console.print(f"[red]not processed:[/] {p.path}: {p.reason}")


def render_diff(console: Console, plan: Plan, show_new: bool = True) -> None:
    """A unified diff per file to write; a file the port adds diffs from /dev/null, as in git. With
    show_new False, each added file (the helper is some 900 lines) is one line instead."""
    for f in plan.files + plan.restores:
        if not f.needs_write:
            continue
        after = f.new.decode("utf-8", errors="replace").splitlines(keepends=True)
        if f.pristine is None and not show_new:
            console.print(f"new file {f.path}: {len(after)} lines (--show-new prints it)", highlight=False)
            continue
        before = (f.current or b"").decode("utf-8", errors="replace").splitlines(keepends=True)
        old_name = "/dev/null" if f.current is None else f"a/{f.path}"
        diff = difflib.unified_diff(before, after, old_name, f"b/{f.path}")
        console.print("".join(diff), markup=False, highlight=False, end="")


def scan_to_json(result: ScanResult) -> dict[str, Any]:
    return {
        "tree": str(result.tree),
        "profile": result.profile.name if result.profile else None,
        "release": result.release.name if result.release else None,
        "drift": [d.__dict__ for d in result.drift],
        "findings": [dict(f.to_json(), inference_path=result.in_scope(f)) for f in result.findings],
        "counts": dict(Counter(f.kind for f in result.findings if f.severity == "error" and result.in_scope(f))),
        "not_scanned": result.own,
        "problems": [p.__dict__ for p in result.problems],
    }


def status_to_json(status: TreeStatus) -> dict[str, Any]:
    manifest = status.manifest
    return {
        "tree": str(status.tree),
        "summary": status.summary,
        "tool_version": manifest.tool_version if manifest else None,
        "profile": manifest.profile if manifest else None,
        "release": manifest.release if manifest else None,
        "files": [f.__dict__ for f in status.files],
    }
