"""`lsync-port forecast`: memory and time of one chunk, at real size."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, TreeArg
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, engine_call, exit_codes_named
from latentsync_mps.cli.inputs import check_needs, interpreter, load_pack

ORDER = 70  # its place in `lsync-port --help`


def forecast(
    tree: TreeArg,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames per inference chunk (LatentSync: 16).")] = 16,
    steps: Annotated[
        int,
        typer.Option("--steps", min=1, help="Denoising steps run (from the 2nd on, each repeats the same live set)."),
    ] = 2,
    resolution: Annotated[
        int | None, typer.Option("--resolution", min=8, help="Frame size (default: the tree's config).")
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Interpreter that has the tree's dependencies (default: this one)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds before the child is killed.")] = 600,
    chip: Annotated[
        str | None,
        typer.Option("--chip", help='Estimate for one Apple chip only ("M3 Pro"; default: every chip in the table).'),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Forecast the device memory and the time one chunk of inference needs, at the release's real size.

    A shape-only run: the tree's own UNet (with the config its inference.sh uses) and the real VAE
    are built on PyTorch's meta device, and one chunk of FRAMES frames goes through VAE encode,
    the denoising loop with classifier-free guidance and VAE decode, with no data, so 2 CPU
    cores suffice. Every allocation is counted: peak bytes (weights included) and the largest
    single buffer, for the CUDA float16 path (flash attention, as upstream runs on NVIDIA) and for
    mps in float16 and float32, with the port's chunking on and off (a ported tree). On mps, a
    buffer over 2**32 bytes stops the run: Metal's limit. Exit {Exit.FORECAST_FAILED} when the run fails.

    The same run counts the work: FLOPs and bytes moved of the VAE, each UNet step, attention and the
    face paste, and from them a roofline estimate of seconds per chunk on each Apple chip (M1 to M4,
    base, Pro, Max: patches/apple-chips.toml), plus the CPU parts measured by scripts/bench.py. An
    estimate, a bound: the output says what it leaves out.

    Example: lsync-port apply ./LatentSync && lsync-port forecast ./LatentSync --python ~/venv/bin/python.
    The port's chunk budget, LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES, is honoured when set.
    """
    from latentsync_mps.features.forecast import run_forecast
    from latentsync_mps.render.forecast import render as render_forecast

    python = interpreter(python)
    check_needs("forecast", tree, python, Exit.FORECAST_FAILED)
    # Bad input (not a tree, no config) is a TreeError: one line and its exit code.
    report = engine_call(run_forecast, tree, load_pack(), python, frames, steps, resolution, timeout, None, chip)
    if json_out:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render_forecast(console, report)
    if not report.ok:
        raise typer.Exit(int(Exit.FORECAST_FAILED))


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(forecast))
