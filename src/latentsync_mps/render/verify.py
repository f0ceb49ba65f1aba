"""Showing a verify run: a live line while it runs, then the table of checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from latentsync_mps.features.verify.runner import CHECK_TITLES, VerifyReport, check_title


@contextlib.contextmanager
def progress(console: Console, enabled: bool = True) -> Iterator[Callable[[dict], None]]:
    """On a terminal: a live line naming the check that runs and its elapsed time; each finished
    check is printed as it ends. Elsewhere (a pipe, a CI log) only the finished checks, as plain text."""
    if not enabled:
        yield lambda event: None
        return

    def finished(event: dict) -> None:
        title = CHECK_TITLES.get(event["check"], event["check"])
        mark = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}.get(event["status"], "?")
        console.print(f"{mark} {title} ({event['seconds']:.1f} s)", highlight=False)

    if not console.is_terminal:
        yield lambda event: finished(event) if event["event"] == "end" else None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting the child process…", total=None)

        def on_event(event: dict) -> None:
            if event["event"] == "start":
                bar.reset(task, description=f"{CHECK_TITLES.get(event['check'], event['check'])}…")
            elif event["event"] == "end":
                finished(event)

        yield on_event


def _memory(value: int | None) -> str:
    if not value:
        return ""
    return f"{value / 2**20:.0f} MiB"


def render_report(console: Console, report: VerifyReport) -> None:
    table = Table(title=f"verify {report.tree} on {report.device}", title_justify="left", show_edge=False)
    for column in ("check", "result", "time", "peak memory", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        colour = {"pass": "green", "fail": "red", "skip": "dim"}.get(check.status, "")
        table.add_row(
            check_title(check.name),
            f"[{colour}]{check.status}[/]",
            f"{check.seconds:.1f} s",
            _memory(check.peak_memory),
            check.detail,
        )
    console.print(table)
    if report.stack:
        render_stack(console, report.stack)
    if report.requirements:
        render_requirements(console, report.requirements)
    for check in report.checks:
        where = check.data.get("traceback")
        if check.status == "fail" and where:
            console.print(f"  where it failed in the tree: {' → '.join(where)}", highlight=False)
    if report.device == "mps-sim":
        render_findings(console, report)
        render_stalls(console, report)
    if report.weights == "synthetic":
        console.print(
            "[dim]Synthetic weights: tiny random checkpoints, and fixed landmarks instead of the face detector "
            "(InsightFace; face_alignment and mediapipe for 1.0 and 1.5); "
            "this proves the code path runs, not the output quality.[/]"
        )
    if report.preview:
        console.print(f"preview: {report.preview} (input and output frames, mouth crops)", highlight=False)
    if report.passed:
        console.print(f"[green bold]PASS[/]: the ported tree runs on {report.device} ({report.seconds:.1f} s).")
    else:
        console.print(f"[red bold]FAIL[/] on {report.device}: {report.reason}")
        only_findings = bool(report.errors) and not any(c.status == "fail" for c in report.checks)
        if report.log_tail and not only_findings and not any(c.data.get("traceback") for c in report.checks):
            console.print("last lines of the child's output:", style="dim")
            for line in report.log_tail[-8:]:
                console.print(f"  {line}", markup=False, highlight=False, style="dim")


def render_findings(console: Console, report: VerifyReport) -> None:
    """The MPS simulator's findings, grouped by call site in the tree: errors fail verify."""
    stats = report.simulator
    target = report.target_torch
    if target:
        macos = f" on a simulated macOS {stats['macos']}" if stats.get("macos") else ""
        if stats.get("mac_memory_bytes"):
            macos += f" Mac with {stats['mac_memory_bytes'] / 2**30:.0f} GB of memory"
        if stats.get("min_macos"):
            macos += f" (torch {target['version']}'s macOS wheel needs macOS {stats['min_macos']} or later)"
        console.print(
            f"MPS simulator: judged against torch {target['version']} ({target['origin']}){macos}.", highlight=False
        )
        if target.get("note"):
            console.print(f"[dim]  {target['note']}[/]", highlight=False)
    memory = stats.get("memory") or {}
    if memory.get("peak_bytes"):
        console.print(
            f"[dim]Simulated device memory: peak {_memory(memory['peak_bytes'])} live, largest buffer "
            f"{_memory(memory['largest_buffer_bytes'])} ({memory.get('largest_buffer_op')}"
            + (f" at {memory['largest_buffer_site']}" if memory.get("largest_buffer_site") else "")
            + ")[/]",
            highlight=False,
        )
    counted = f"{stats.get('ops', 0)} device ops ({stats.get('distinct_ops', 0)} distinct) checked" if stats else ""
    if not report.findings:
        console.print(f"MPS simulator: no findings{'; ' + counted if counted else ''}.", highlight=False)
        return
    errors = len(report.errors)
    warnings = len(report.findings) - errors
    table = Table(
        title=f"MPS simulator findings by call site: {errors} error(s), {warnings} warning(s)"
        + (f"; {counted}" if counted else ""),
        title_justify="left",
        show_edge=False,
    )
    for column in ("call site", "level", "kind", "op", "count", "on a Mac"):
        table.add_column(column, overflow="fold")
    by_site: dict[str, list[dict]] = {}
    for finding in report.findings:
        by_site.setdefault(finding["site"], []).append(finding)
    order = sorted(by_site, key=lambda site: (all(f["level"] != "error" for f in by_site[site]), site))
    for site in order:
        for index, finding in enumerate(by_site[site]):
            colour = "red" if finding["level"] == "error" else "yellow"
            where = site if index == 0 else ""
            if index == 0 and finding.get("function"):
                where += f" in {finding['function']}"
            table.add_row(
                where,
                f"[{colour}]{finding['level']}[/]",
                finding["kind"],
                finding["op"],
                str(finding.get("count", 1)),
                finding.get("summary") or finding["message"],
            )
    console.print(table)
    console.print("[dim]`--json` gives each finding's full message (the error text MPS gives) and its stack.[/]")
    if stats.get("computed_in_float32"):
        console.print(
            "[dim]Computed in float32 by the simulator (no CPU half kernel; not a finding): "
            + ", ".join(stats["computed_in_float32"])
            + "[/]"
        )


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


# Outside the denoising loop, the sites shown (the rest are in --json): loading weights alone makes hundreds.
_OUTSIDE_SHOWN = 6


def _stall_line(totals: dict, per: str = "") -> str:
    return (
        f"{totals['readbacks']:g} read(s) back to the host, {totals['copies']:g} copies "
        f"({_bytes(int(totals['copy_bytes']))}), {totals['cpu_ops']:g} op(s) run on the CPU{per}"
    )


def render_stalls(console: Console, report: VerifyReport) -> None:
    """Where the simulated run waits on the host or copies: the denoising loop first (by site), then the rest."""
    stalls = (report.simulator or {}).get("stalls")
    if not stalls:
        return
    steps = stalls["denoising_steps"]
    if steps:
        console.print(
            f"Stalls in the denoising loop ({steps} steps in {stalls['denoising_loops']} loop(s)): "
            + _stall_line(stalls["in_loop_per_step"], " per step"),
            highlight=False,
        )
    else:
        console.print("Stalls: no denoising step was seen (the pipeline did not run under the simulator).")
    console.print(f"[dim]Outside the loop: {_stall_line(stalls['outside_loop'])}.[/]", highlight=False)
    sites = stalls["sites"]
    loop = [s for s in sites if s["phase"] == "loop"]
    outside = sorted((s for s in sites if s["phase"] != "loop"), key=lambda s: -s["count"])
    shown = loop + [s for s in outside if s["kind"] != "copy" or s["direction"] == "to host"][:_OUTSIDE_SHOWN]
    if not shown:
        return
    table = Table(title="Stalls by call site", title_justify="left", show_edge=False)
    for column in ("where", "call site", "kind", "op", "count", "per step", "bytes"):
        table.add_column(column, overflow="fold")
    for site in shown:
        kind = site["kind"] + (f" {site['direction']}" if site.get("direction") else "")
        table.add_row(
            "[red]loop[/]" if site["phase"] == "loop" else "outside",
            site["site"]
            + (f" in {site['function']}" if site.get("function") else "")
            + (f" (inside {site['via']})" if site.get("via") else ""),
            kind + (" (port)" if site.get("port") else ""),
            site["op"],
            str(site["count"]),
            f"{site['per_step']:g}" if site.get("per_step") is not None else "",
            _bytes(site["bytes"]) if site["bytes"] else "",
        )
    console.print(table)
    hidden = len(sites) - len(shown)
    if hidden:
        console.print(
            f"[dim]{hidden} more site(s) outside the loop (copies to the device: weights, inputs): --json.[/]"
        )
    console.print("[dim]docs/stalls.md says why each one in the loop is there and what it costs on a Mac.[/]")


def render_stack(console: Console, stack: dict) -> None:
    """The host stack the run modelled: its name, whether it is the tree's default, its facts' source."""
    packages = ", ".join(f"{name} {version}" for name, version in stack["packages"].items())
    default = " (the default for this tree; --stack names another)" if stack.get("default") else ""
    ffmpeg = "an ffmpeg on PATH" if stack["ffmpeg_on_path"] else "no ffmpeg on PATH"
    console.print(
        f"host stack: {stack['name']}{default}: {stack['summary']}; Python {stack['python']}"
        + (f", {packages}" if packages else "")
        + f", {ffmpeg} [dim](source: {stack['source']}; checked {stack['checked']})[/]",
        highlight=False,
    )
    for note in stack.get("not_modelled", []):
        console.print(f"[dim]  not modelled here: {note}[/]", highlight=False)


def render_requirements(console: Console, resolved: dict) -> None:
    """The pre-check: the tree's requirements on the stack's Mac, each one without a wheel with its fix."""
    from latentsync_mps.host.mac_resolve import Resolution

    colour = {"resolved": "green", "unresolvable": "red"}.get(resolved["status"], "dim")
    console.print(f"[{colour}]requirements:[/] {Resolution.from_json(resolved).line()}", highlight=False)
    for missing in resolved.get("missing", []):
        console.print(f"  {missing['requirement']}: {missing['why']}; fix: {missing['fix']}", highlight=False)
