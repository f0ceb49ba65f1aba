"""Showing a verify run: a live line while it runs, then the table of checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.table import Table

from .runner import CHECK_TITLES, VerifyReport


@contextlib.contextmanager
def progress(console: Console, enabled: bool = True) -> Iterator[Callable[[dict], None]]:
    """A spinner naming the check that runs; each finished check is printed as it ends."""
    if not enabled:
        yield lambda event: None
        return
    with console.status("starting the child process…") as status:

        def on_event(event: dict) -> None:
            title = CHECK_TITLES.get(event["check"], event["check"])
            if event["event"] == "start":
                status.update(f"{title}…")
            else:
                mark = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}.get(event["status"], "?")
                console.print(f"{mark} {title} ({event['seconds']:.1f} s)")

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
            check.title,
            f"[{colour}]{check.status}[/]",
            f"{check.seconds:.1f} s",
            _memory(check.peak_memory),
            check.detail,
        )
    console.print(table)
    for check in report.checks:
        where = check.data.get("traceback")
        if check.status == "fail" and where:
            console.print(f"  where it failed in the tree: {' → '.join(where)}", highlight=False)
    if report.weights == "synthetic":
        console.print(
            "[dim]Synthetic weights: tiny random checkpoints, and fixed landmarks instead of InsightFace; "
            "this proves the code path runs, not the output quality.[/]"
        )
    if report.passed:
        console.print(f"[green bold]PASS[/]: the ported tree runs on {report.device} ({report.seconds:.1f} s).")
    else:
        console.print(f"[red bold]FAIL[/] on {report.device}: {report.reason}")
        if report.log_tail and not any(c.data.get("traceback") for c in report.checks):
            console.print("last lines of the child's output:", style="dim")
            for line in report.log_tail[-8:]:
                console.print(f"  {line}", markup=False, highlight=False, style="dim")
