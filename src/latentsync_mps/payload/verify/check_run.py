"""One check's run as the child reports it: its start and end events, how it failed or was skipped,
and the peak memory at its end. Shared by verify's harness and forecast's child."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

EVENTS: Path | None = None  # the spec's event stream, set by the entry script (or a test's driver)


def emit(record) -> None:
    protocol.write_event(EVENTS, record)


class CheckFailed(Exception):
    """A check's failure with the reason a person should read."""


class SkipCheck(Exception):
    pass


def peak_memory(device: str) -> int | None:
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    if torch is not None and device == "mps" and torch.backends.mps.is_available():
        return int(torch.mps.driver_allocated_memory())
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        return None


def run_check(name: str, function, spec, state) -> bool:
    emit(protocol.CheckStart(name))
    started = time.perf_counter()
    status, detail, data = "pass", "", {}
    try:
        result = function(spec, state)
        if isinstance(result, tuple):
            detail, data = result
        elif isinstance(result, str):
            detail = result
    except CheckFailed as failure:
        status, detail = "fail", str(failure)
    except SkipCheck as skip:
        status, detail = "skip", str(skip)
    except BaseException as error:  # the tree's own code failed: report its error, not ours
        status = "fail"
        detail = f"{type(error).__name__}: {error}"
        data = {"traceback": tree_traceback(error, spec.tree)}
        if isinstance(error, KeyboardInterrupt):
            raise
    seconds = round(time.perf_counter() - started, 3)
    emit(protocol.CheckEnd(name, status, seconds, detail, peak_memory(spec.device), data))
    return status != "fail"


def tree_traceback(error: BaseException, tree: str) -> list[str]:
    """The frames of the traceback that lie in the tree: where its code failed, file:line."""
    frames = traceback.extract_tb(error.__traceback__)
    inside = [
        f"{Path(f.filename).resolve().relative_to(tree)}:{f.lineno} in {f.name}"
        for f in frames
        if _inside(f.filename, tree)
    ]
    return inside[-6:] or [f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-3:]]


def _inside(filename: str, tree: str) -> bool:
    try:
        Path(filename).resolve().relative_to(tree)
        return True
    except ValueError:
        return False
