"""Human output of `lsync-port forecast`: one table row per configuration, figures in GiB."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import GIB, METAL_BUFFER_LIMIT, ForecastReport


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def render(console: Console, report: ForecastReport) -> None:
    where = f"release {report.release}" if report.release else "release not recognised"
    size = f"{report.resolution}x{report.resolution}, " if report.resolution else ""
    console.print(
        f"[bold]forecast[/] {report.tree} · {where} · {report.config} · {size}"
        f"{report.frames} frames, classifier-free guidance, {report.steps} denoising steps · "
        f"torch {report.torch or '?'} · {report.seconds:.0f} s",
        highlight=False,
    )
    if report.reason and not any(row.status == "pass" for row in report.configurations):
        # Nothing was measured: the cause first and alone, not a table of empty failed rows.
        _render_failure(console, report)
        return
    table = Table(show_edge=False, title_justify="left", pad_edge=False)
    for column, justify in (
        ("device", "left"),
        ("dtype", "left"),
        ("chunk-\ning", "left"),
        ("peak\nGiB", "right"),
        ("weights\nGiB", "right"),
        ("largest\nbuffer GiB", "right"),
        ("largest buffer made by", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold", no_wrap=column != "largest buffer made by")
    for row in report.configurations:
        chunking = "-" if row.chunking is None else ("on" if row.chunking else "off")
        if row.status != "pass":
            table.add_row(row.device, row.dtype, chunking, "-", "-", "-", f"[dim]{row.status}: {row.detail}[/]")
            continue
        largest = gib(row.largest_buffer_bytes)
        if row.over_metal_limit:
            largest = f"[red]{largest}[/]"
        made_by = row.largest_buffer_op.replace("_scaled_dot_product_attention_math_for_mps", "attention scores")
        table.add_row(row.device, row.dtype, chunking, gib(row.peak_bytes), gib(row.weights_bytes), largest, made_by)
    console.print(table)
    over = [row for row in report.configurations if row.over_metal_limit]
    if over:
        names = ", ".join(row.name for row in over)
        console.print(
            f"[red]Metal limit:[/] one Metal buffer may hold at most 2**32 bytes ({METAL_BUFFER_LIMIT / GIB:.0f} GiB); "
            f"the largest buffer of {names} is bigger, so that run stops on a Mac "
            "(keep the port's chunking on).",
            highlight=False,
        )
    if not report.ported and report.torch is not None:  # the build ran and found no runtime helper
        console.print("The chunking rows need a ported tree: run `lsync-port apply` on it first.")
    console.print(
        "[dim]Peak: weights plus the live tensors of one chunk of frames (VAE encode, denoising, VAE decode), "
        "counted on meta tensors; the allocator's cache, the CUDA context and face detection come on top "
        "(docs/benchmarks.md).[/]"
    )
    if report.reason:
        _render_failure(console, report)


def _render_failure(console: Console, report: ForecastReport) -> None:
    console.print(f"[red]forecast failed:[/] {escape(report.reason)}", highlight=False)
    for line in report.log_tail[-8:]:
        console.print(f"  {line}", markup=False, highlight=False, style="dim")
