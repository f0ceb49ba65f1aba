"""`lsync-port doctor`: pre-flight checks of the machine and the interpreter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.app import JsonOpt, StackOpt
from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import Exit, exit_code_of, exit_codes_named, fail
from latentsync_mps.cli.inputs import check_needs, load_pack

ORDER = 110  # its place in `lsync-port --help`


def doctor(
    tree: Annotated[
        Path | None,
        typer.Argument(
            help="A LatentSync checkout to check too (patched? requirements? checkpoints?).", show_default=False
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="The interpreter that will run the tree (default: the one running lsync-port)."),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", min=1, help="Frame size for the memory estimate (default: the tree's config, else 512)."
        ),
    ] = None,
    live_forecast: Annotated[
        bool,
        typer.Option(
            "--forecast",
            help="Run `lsync-port forecast` on TREE (a minute or more) for the memory check, instead of the "
            "figures shipped for its release.",
        ),
    ] = False,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pre-flight check of the machine and the Python that will run a port: ok / warning / blocker, with fixes.

    The facts are gathered by a small script run in that interpreter (a child process). The memory
    check compares this machine with the memory forecast of the tree's release (shipped with
    lsync-port; --forecast measures this tree). Exit {Exit.DOCTOR_BLOCKER} when any check is a blocker.
    """
    from latentsync_mps.features.doctor import DoctorError, run
    from latentsync_mps.render.doctor import render

    if live_forecast and tree is None:
        raise fail("--forecast needs TREE: it forecasts that tree's memory", Exit.USAGE)
    if live_forecast:
        check_needs("forecast", tree, python, Exit.USAGE)
    try:
        pack = load_pack() if tree is not None else None
        live = _live_forecast(pack, python) if live_forecast else None
        result = run(tree, python, resolution, pack, live, stack, exit_code_of=exit_code_of)
    except DoctorError as error:
        raise fail(str(error), Exit.USAGE) from None
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render(console, result, Exit.DOCTOR_BLOCKER.value)
    if result.blockers:
        raise typer.Exit(int(Exit.DOCTOR_BLOCKER))


def _live_forecast(pack, python: str | None):
    """--forecast: doctor's memory check reads a live `forecast` of the tree, at doctor's resolution.
    The CLI composes the two features; doctor only calls this."""
    from latentsync_mps.features.doctor import resolve_python

    exe, _ = resolve_python(python)

    def live(tree_root: Path, resolution: int) -> dict:
        from latentsync_mps.features.forecast import ForecastError, run_forecast

        try:
            report = run_forecast(tree_root, pack, python=exe, resolution=resolution)
        except ForecastError as error:
            return {"source": "live", "error": str(error)}
        if not report.ok:
            return {"source": "live", "error": report.reason}
        return report.to_json() | {"source": "live"}

    return live


def register(app: typer.Typer) -> None:
    app.command()(exit_codes_named(doctor))
