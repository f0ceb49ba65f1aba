"""The one simulator installed in this process: hooks.install() sets it, every MPSSimTensor reports to
it. Its own module so that the tensor (which reports) and the simulator (which makes tensors) need
not import each other."""

from __future__ import annotations

from typing import Any

simulator: Any = None  # the Simulator (simulator.py), once installed


def active():
    """The installed Simulator; an error before install()."""
    if simulator is None:
        raise RuntimeError("the MPS simulator is not installed")
    return simulator
