"""The typer application, its consoles and the options that several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentsync_mps.cli.console import console
from latentsync_mps.cli.exits import EXIT_CODES_HELP

app = typer.Typer(
    name="lsync-port",
    help=(
        "Port a LatentSync checkout (or ComfyUI-LatentSyncWrapper) to Apple Silicon and back.\n\n"
        "Typical use:  lsync-port apply ./LatentSync --dry-run --diff  (look),  "
        "lsync-port apply ./LatentSync  (port),  lsync-port status ./LatentSync,  "
        "lsync-port revert ./LatentSync  (undo, byte for byte).\n\n"
        "The ported tree picks its device when it runs: mps, else cuda, else cpu; set "
        "LATENTSYNC_DEVICE=cpu|mps|cuda and LATENTSYNC_DTYPE=float32|float16|bfloat16 to override."
    ),
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(asked: bool) -> None:
    if asked:
        from latentsync_mps import __version__

        console.print(f"lsync-port {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print lsync-port's version and exit."),
    ] = False,
) -> None:
    pass


TreeArg = Annotated[Path, typer.Argument(help="Root of the upstream checkout.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report instead of tables.")]
StackOpt = Annotated[
    str | None,
    typer.Option(
        "--stack",
        help="The host stack to model (patches/stacks.toml): comfyui-desktop-macos (the wrapper's default), "
        "comfyui-manual-macos, tree-pins (plain LatentSync's default: the torch its requirements pin). The tree's "
        "code then sees only what that Mac set-up has, and mps-sim judges against the stack's torch.",
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", help="Force the profile (latentsync, comfyui-latentsyncwrapper) instead of detecting it."
    ),
]
