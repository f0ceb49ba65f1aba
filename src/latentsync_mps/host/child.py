"""Run a payload script in the tree's interpreter and follow its events until it ends.

The child runs `script SPEC.json` under the given interpreter, from the tree's root, in its own
process group, under a time limit: on a hang the whole group is killed. Its events (protocol.py's
records, one JSON line each) are read while it runs, so that a crash or an out-of-memory kill
still leaves every check it started. Shared by verify (harness.py) and forecast (forecast/child.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from latentsync_mps.payload import protocol


@dataclass
class CheckResult:
    name: str
    status: str  # pass | fail | skip | running (when the child died during it)
    seconds: float = 0.0
    detail: str = ""
    peak_memory: int | None = None
    data: dict = field(default_factory=dict)


@dataclass
class ChildRun:
    """What a child script run through `run_child` left: its checks, and how it ended."""

    results: dict[str, CheckResult]
    timed_out: bool
    simulated: dict
    returncode: int
    log_tail: list[str]


def run_child(
    script: Path,
    spec: protocol.Spec,
    tree: Path,
    python: str,
    timeout: float,
    on_event: Callable[[dict], None] | None = None,
) -> ChildRun:
    """Run `script SPEC.json` under `python` from the tree's root, in its own process group, and
    follow its events (spec.events) until it exits or `timeout` passes."""
    work = Path(spec.work)
    events = Path(spec.events)
    events.touch()
    (work / "spec.json").write_text(json.dumps(spec.to_json()))
    log = work / "child.log"
    with open(log, "wb") as log_handle:
        child = subprocess.Popen(
            [python, str(script), str(work / "spec.json")],
            cwd=tree,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        results, timed_out, simulated = _follow(child, events, timeout, on_event)
    log_tail = log.read_text(errors="replace").splitlines()[-15:]
    return ChildRun(results, timed_out, simulated, child.returncode, log_tail)


def _follow(
    child: subprocess.Popen, events: Path, timeout: float, on_event
) -> tuple[dict[str, CheckResult], bool, dict]:
    results: dict[str, CheckResult] = {}
    simulated: dict = {}
    deadline = time.monotonic() + timeout
    offset = 0
    timed_out = False
    while True:
        finished = child.poll() is not None
        with open(events, encoding="utf-8") as handle:
            handle.seek(offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            record = protocol.read_event(line)
            if isinstance(record, protocol.Findings):
                simulated = protocol.event_json(record)  # cumulative: the last one has them all
                continue
            if isinstance(record, protocol.CheckStart):
                results[record.check] = CheckResult(record.check, "running")
            else:
                results[record.check] = CheckResult(
                    record.check, record.status, record.seconds, record.detail, record.peak_memory, record.data
                )
            if on_event:
                on_event(protocol.event_json(record))
        if finished:
            return results, timed_out, simulated
        if time.monotonic() > deadline:
            timed_out = True
            _kill(child)
        time.sleep(0.05)


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
