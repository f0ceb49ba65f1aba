"""The simulated MPS device (`lsync-port verify TREE --device mps-sim`): the entry point that the verify
harness loads by path, in the child that runs the tree under the tree's own interpreter (which need
not have lsync-port installed), and that `from latentsync_mps.payload import mps_sim` imports.

The simulator itself is the package beside this file, mpssim/ (its docstring says what it checks
and what it cannot see). Imported as part of lsync-port, this module is that package's names;
loaded by path, it loads the package by path too, under one fixed name, so that the harness, the
tests' child drivers (`spec_from_file_location(..., "mps_sim.py")`, or this folder on sys.path and
`import mps_sim`) and lsync-port all get the same names.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_protocol():
    """payload/protocol.py, loaded by path: the one sibling that cannot come through its own loader."""
    if "lsync_port_protocol" not in sys.modules:
        module_spec = importlib.util.spec_from_file_location("lsync_port_protocol", HERE / "protocol.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["lsync_port_protocol"] = module
        module_spec.loader.exec_module(module)
    return sys.modules["lsync_port_protocol"]


if __package__:  # latentsync_mps.payload.mps_sim
    from . import mpssim as _parts
else:  # loaded by path, or imported as the top-level module `mps_sim`: mpssim/ under one fixed name
    _parts = _load_protocol().load_sibling(HERE / "mpssim", "lsync_port_mpssim", package=True)

__all__ = list(_parts.__all__)
globals().update({name: getattr(_parts, name) for name in __all__})
