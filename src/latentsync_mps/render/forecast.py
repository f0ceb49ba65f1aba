"""Human output of `lsync-port forecast`: one table row per configuration, figures in GiB."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from latentsync_mps.features.forecast import GIB, METAL_BUFFER_LIMIT, ForecastReport


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
    render_estimate(console, report.estimate)
    if report.reason:
        _render_failure(console, report)


def _render_failure(console: Console, report: ForecastReport) -> None:
    console.print(f"[red]forecast failed:[/] {escape(report.reason)}", highlight=False)
    for line in report.log_tail[-8:]:
        console.print(f"  {line}", markup=False, highlight=False, style="dim")


# The configurations the time table shows, in order: the port's default on a Mac first.
_TIMED = ("mps-float16-chunked", "mps-float32-chunked")


def _label(name: str) -> str:
    """ "mps-float16-chunked" -> "float16, chunking on" (the table names no configuration: that is the rows above)."""
    _, dtype, chunking = name.split("-")
    return f"{dtype}, chunking {'on' if chunking == 'chunked' else 'off'}"


def _flops(value: float) -> str:
    return f"{value / 1e12:.2f} TFLOP" if value >= 1e11 else f"{value / 1e9:.1f} GFLOP"


def render_estimate(console: Console, estimate: dict) -> None:
    """Work per chunk and seconds per chunk on each Apple chip (estimate.py)."""
    rows = estimate.get("configurations") or {}
    shown = [name for name in _TIMED if name in rows]
    if not shown:
        return
    work = rows[shown[0]]["work"]
    parts = work["parts"]
    console.print(
        f"Work of one chunk on mps ({_label(shown[0])}, {work['steps']} denoising steps): "
        f"{_flops(work['chunk']['flops'])}, {work['chunk']['bytes'] / GIB:.1f} GiB moved; "
        f"UNet per step {_flops(parts['unet per step']['flops'])} (attention "
        f"{_flops(parts['unet per step']['attention_flops'])}), VAE encode {_flops(parts['vae encode']['flops'])}, "
        f"VAE decode {_flops(parts['vae decode']['flops'])}.",
        highlight=False,
    )
    table = Table(
        title=f"Estimated seconds per {estimate['frames']}-frame chunk (a roofline bound, not a measurement)",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("chip")
    for name in shown:
        table.add_column(f"{_label(name)}\ns", justify="right")
    table.add_column("of which\nCPU s", justify="right")
    for index, chip in enumerate(rows[shown[0]]["chips"]):
        cells = [f"{rows[name]['chips'][index]['seconds']:.1f}" for name in shown]
        table.add_row(chip["chip"].removeprefix("Apple "), *cells, f"{chip['cpu_seconds']:.1f}")
    console.print(table)
    measured = estimate.get("cpu_measured")
    cpu = (
        f"CPU parts measured by scripts/bench.py on {measured.get('machine')} ({measured.get('date')})"
        if measured
        else "no measured CPU parts (patches/cpu-measured.json is missing)"
    )
    console.print(
        f"[dim]GPU: every kernel at the chip's published peak FLOPs and bandwidth (patches/apple-chips.toml); "
        f"{cpu}. Leaves out: {'; '.join(estimate.get('leaves_out', []))}. docs/benchmarks.md compares it with "
        "published timings.[/]",
        highlight=False,
    )
