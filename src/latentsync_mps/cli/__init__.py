"""The `lsync-port` command. Thin: it parses options, calls a feature or the port, and renders the
result. This is the only layer that knows exit codes (exits.py). It may import every other folder;
nothing imports it.

Heavy modules (libcst, the port, torch) are imported inside the commands so that `--help` starts fast.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

from latentsync_mps.cli import commands
from latentsync_mps.cli.app import app
from latentsync_mps.cli.console import errors
from latentsync_mps.cli.early_apply import reapply_early
from latentsync_mps.cli.exits import Exit


def _register_commands() -> None:
    """Every module of cli/commands/, in the order --help lists them."""
    found = pkgutil.iter_modules(commands.__path__)
    modules = [importlib.import_module(f"{commands.__name__}.{info.name}") for info in found]
    for module in sorted(modules, key=lambda m: m.ORDER):
        module.register(app)


_register_commands()


def main() -> None:
    """Console entry point: user errors exit with a message, never a traceback."""
    try:
        if not reapply_early(sys.argv[1:]):
            app()
    except typer.Exit as done:  # raised by the early answer, outside typer's own handling
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        errors.print("interrupted: files already written are complete; `lsync-port status` tells where the tree stands")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("LSYNC_PORT_DEBUG"):
            raise
        errors.print(
            f"[red]internal error:[/] {type(error).__name__}: {error}\n"
            "This is a bug in lsync-port. Run again with LSYNC_PORT_DEBUG=1 for the traceback and report it."
        )
        sys.exit(int(Exit.INTERNAL))
