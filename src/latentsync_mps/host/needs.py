"""What `verify` and `forecast` need in the interpreter that runs the tree, checked before the run.

Without it, `pip install .` and then `verify` failed deep in the child with "cannot read
configs/unet/stage2.yaml", and `forecast` with a table of "fail:" rows. Instead: one line, first,
naming what is missing (by distribution: protobuf, not google) and the command that installs it:
lsync-port's `verify` extra for lsync-port's own interpreter, the tree's pins for `--python`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from latentsync_mps.payload.verify import distributions

EXTRA = "verify"
# Top-level imports of the child code (verify/harness.py, forecast/child.py) from the verify extra.
RUN = ["torch", "numpy", "omegaconf", "diffusers", "huggingface_hub"]
NEEDS = {
    "verify": [*RUN, "decord", "imageio_ffmpeg"],
    "verify --device mps-sim": [*RUN, "decord", "imageio_ffmpeg", "yaml"],  # torch's native_functions.yaml
    "forecast": RUN,
}


class Unavailable(Exception):
    """The interpreter cannot run the command; the message is the one line to print."""


def _missing_in(python: str | None, modules: list[str]) -> list[str]:
    if python is None:  # this interpreter (a venv's python resolves to its base's: compare no paths)
        return distributions.missing_modules(modules)
    script = Path(distributions.__file__)
    try:
        done = subprocess.run([python, str(script), *modules], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{python} does not run: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"{python} cannot check its packages: {last}")
    return [line for line in done.stdout.split() if line]


def check(command: str, tree: Path, python: str | None) -> None:
    """Raise Unavailable with one line when `python` lacks what `command` imports."""
    own = python is None
    missing = _missing_in(python, NEEDS[command])
    python = python or sys.executable
    if not missing:
        return
    version = _python_version(python) if not own else sys.version_info[:2]
    names = [distributions.distribution_for(m, version) for m in missing]
    name = command.split()[0]
    if own:
        raise Unavailable(
            f"{name} needs lsync-port's '{EXTRA}' extra, and {python} lacks {', '.join(names)}; install it: "
            f"{python} -m pip install 'lsync-port[{EXTRA}]' (from a checkout of lsync-port: pip install '.[{EXTRA}]')"
        )
    pins = [distributions.requirement_for(n, tree) for n in names]
    raise Unavailable(
        f"{name} runs the tree with {python}, which lacks {', '.join(names)} of the tree's stack; install "
        f"{'it' if len(pins) == 1 else 'them'}: {distributions.install_command(python, pins)}"
    )


def _python_version(python: str) -> tuple[int, int]:
    done = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=False
    )
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else sys.version_info[:2]
