"""`doctor`'s table: status, check, detail and fix, and one summary line."""

from __future__ import annotations

from latentsync_mps.features.doctor import Result
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING

_STYLE = {OK: "green", WARNING: "yellow", BLOCKER: "bold red"}


def render(console, result: Result, blocker_exit_code: int) -> None:
    """The table (status, check, detail, fix) and a summary line."""
    from rich.table import Table
    from rich.text import Text

    facts = result.facts
    probe = facts.get("probe") or {}
    version = (probe.get("python") or {}).get("version_text") if isinstance(probe.get("python"), dict) else None
    whose = "" if facts.get("python_given") else " (lsync-port's own; --python names another)"
    header = f"lsync-port doctor {facts.get('tool_version')} · python {facts.get('python')}"
    header += f" {version}" if version else ""
    header += whose
    tree = facts.get("tree")
    if tree:
        header += f" · tree {tree.get('path')}"
    console.print(Text(header, style="bold"))
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail, and the fix", overflow="fold")
    for check in result.checks:
        cell = Text(check.detail)
        if check.fix:
            cell.append("\nfix: ", style="bold")
            cell.append(check.fix)
        table.add_row(Text(check.status, style=_STYLE[check.status]), check.name, cell)
    console.print(table)
    counts = f"{result.count(OK)} ok, {result.count(WARNING)} warning(s), {result.blockers} blocker(s)"
    if result.blockers:
        console.print(
            Text(f"{counts}: fix the blockers before a run (exit code {blocker_exit_code}).", style="bold red")
        )
    else:
        console.print(
            Text(f"{counts}: nothing blocks a run.", style="green" if not result.count(WARNING) else "yellow")
        )
