"""What `verify` and `forecast` need in the interpreter that runs the tree, checked before the run.

Without it, `pip install .` and then `verify` failed deep in the child with "cannot read
configs/unet/stage2.yaml", and `forecast` with a table of "fail:" rows. Instead: one line, first,
naming what is missing (by distribution: protobuf, not google) and the command that installs it:
lsync-port's `verify` extra for lsync-port's own interpreter, the tree's pins for `--python`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXTRA = "verify"
# Run by path in the interpreter checked: host/ starts payload scripts, it does not import them.
DISTRIBUTIONS = Path(__file__).resolve().parent.parent / "payload" / "verify" / "distributions.py"
# Top-level imports of the child code (verify/harness.py, forecast/child.py) from the verify extra.
RUN = ["torch", "numpy", "omegaconf", "diffusers", "huggingface_hub"]
NEEDS = {
    "verify": [*RUN, "decord", "imageio_ffmpeg"],
    "verify --device mps-sim": [*RUN, "decord", "imageio_ffmpeg", "yaml"],  # torch's native_functions.yaml
    "forecast": RUN,
}


class Unavailable(Exception):
    """The interpreter cannot run the command; the message is the one line to print."""


def _lacking(python: str, tree: Path, modules: list[str]) -> list[dict[str, str]]:
    """What `python` lacks of `modules`, by distribution, with the tree's pins: the interpreter answers
    for itself (payload/verify/distributions.py, run as a script)."""
    try:
        done = subprocess.run(
            [python, str(DISTRIBUTIONS), str(tree), *modules], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{python} does not run: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"{python} cannot check its packages: {last}")
    return json.loads(done.stdout)


def check(command: str, tree: Path, python: str | None) -> None:
    """Raise Unavailable with one line when `python` lacks what `command` imports."""
    own = python is None
    python = python or sys.executable
    lacking = _lacking(python, tree, NEEDS[command])
    if not lacking:
        return
    names = [row["distribution"] for row in lacking]
    name = command.split()[0]
    if own:
        raise Unavailable(
            f"{name} needs lsync-port's '{EXTRA}' extra, and {python} lacks {', '.join(names)}; install it: "
            f"{python} -m pip install 'lsync-port[{EXTRA}]' (from a checkout of lsync-port: pip install '.[{EXTRA}]')"
        )
    pins = [row["requirement"] for row in lacking]
    raise Unavailable(
        f"{name} runs the tree with {python}, which lacks {', '.join(names)} of the tree's stack; install "
        f"{'it' if len(pins) == 1 else 'them'}: {python} -m pip install " + " ".join(f"'{pin}'" for pin in pins)
    )
