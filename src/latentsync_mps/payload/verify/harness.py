"""Smoke inference inside a (ported) LatentSync tree. Runs in a child process, never in lsync-port's.

    python harness.py SPEC.json

Standalone on purpose: it runs under the interpreter that runs the tree (`--python`), which need
not have lsync-port installed. It imports the tree's own modules from the tree's root, runs the
checks in order, and appends one JSON line per event to the spec's `events` file:

    {"event": "start", "check": "decode"}
    {"event": "end", "check": "decode", "status": "pass"|"fail"|"skip", "seconds": 0.4,
     "detail": "...", "peak_memory": 123456789, "data": {...}}

With `"simulate": "mps"` in the spec (`--device mps-sim`), the package mpssim/ (beside verify/, loaded by
path) is installed first and, after every check, the findings so far are appended too:

    {"event": "findings", "findings": [{"kind": ..., "level": ..., "op": ..., "site": ...}], "stats": {...}}

A check that fails ends the run: each later check needs what the earlier ones built. The parent
(runner.py) enforces the time limit and reports a crash or hang by the last check that started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_protocol():
    """payload/protocol.py, loaded by path: the one sibling that cannot come through its own loader."""
    if "lsync_port_protocol" not in sys.modules:
        module_spec = importlib.util.spec_from_file_location("lsync_port_protocol", HERE.parent / "protocol.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["lsync_port_protocol"] = module
        module_spec.loader.exec_module(module)
    return sys.modules["lsync_port_protocol"]


protocol = _load_protocol()
check_run = protocol.load_sibling(HERE / "check_run.py")
checks = protocol.load_sibling(HERE / "checks.py")
distributions = protocol.load_sibling(HERE / "distributions.py")
inputs = protocol.load_sibling(HERE / "inputs.py")
release = protocol.load_sibling(HERE / "release.py")
State = protocol.load_sibling(HERE / "state.py").State


def main(spec_path: str) -> int:
    spec = protocol.Spec.read(spec_path)
    check_run.EVENTS = Path(spec.events)
    tree = spec.tree
    os.chdir(tree)
    sys.path.insert(0, tree)
    state = State()
    if spec.simulate == "mps":
        # Before anything of the tree is imported: torch must already answer as an MPS machine.
        spec.device = "mps"
        try:
            state.simulator = install_simulator(spec)
        except Exception as error:  # no torchgen yaml, no pyyaml...: say so as the device check
            check_run.emit(protocol.CheckStart("device"))
            detail = f"the MPS simulator could not start: {type(error).__name__}: {error}"
            if isinstance(error, ImportError) and error.name:
                distribution = distributions.distribution_for(error.name)
                detail += f"; install it: {sys.executable} -m pip install '{distribution}'"
            check_run.emit(protocol.CheckEnd("device", "fail", 0, detail))
            return 1
    if spec.stack:
        # The host stack modelled (stacks.toml): the tree's code sees only what that Mac set-up has.
        stack_model = protocol.load_sibling(HERE / "stack_model.py")
        state.stack_notes = stack_model.install(tree, spec.stack)
    if spec.weights == "synthetic" and release.release_fact(spec, "face_detection") == "face_alignment":
        # 1.0, 1.5: face_alignment and mediapipe stood in (InsightFace's stand-in comes with the pipeline)
        landmarks = protocol.load_sibling(HERE / "landmarks.py")
        state.landmarks = landmarks.install(inputs.face_landmarks)
    if spec.device == "auto":
        spec.device = _auto_device()
    os.environ["LATENTSYNC_DEVICE"] = spec.device
    if (spec.stack or {}).get("ffmpeg_on_path", True):
        ffmpeg_on_path(Path(spec.work))
    try:
        state.config, state.resolution, state.whole_chunks = release.read_config(spec)
    except Exception as error:  # noqa: BLE001 - said as the config check's failure, with its cause
        cause = f"{type(error).__name__}: {error}"
        if isinstance(error, ImportError) and error.name:
            distribution = distributions.distribution_for(error.name)
            cause += f"; install it: {sys.executable} -m pip install '{distribution}'"
        detail = f"cannot read {spec.config}: {cause}"
        check_run.emit(protocol.CheckEnd("config", "fail", 0, detail))
        return 1
    ok = True
    order = checks.CHECKS
    if spec.comfy:
        # A node package: its nodes run first after the inputs are made, as a workflow runs them on the
        # Mac (the first failure named is the node's own), then the vendored LatentSync's checks.
        comfy_node = protocol.load_sibling(HERE / "comfy_node.py")
        at = [name for name, _ in order].index("audio")
        order = order[:at] + comfy_node.watched_checks() + order[at:]
    for name, function in order:
        if not ok:
            break
        ok = check_run.run_check(name, function, spec, state)
        _emit_findings(state)
    return 0 if ok else 1


def _auto_device() -> str:
    import torch

    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cuda" if torch.cuda.is_available() else "cpu"


def ffmpeg_on_path(work: Path) -> None:
    """LatentSync runs the `ffmpeg` command; without one on PATH, use imageio-ffmpeg's binary."""
    if shutil.which("ffmpeg"):
        return
    with contextlib.suppress(ImportError, RuntimeError, OSError):
        import imageio_ffmpeg

        folder = work / "bin"
        folder.mkdir(exist_ok=True)
        link = folder / "ffmpeg"
        if not link.exists():
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def install_simulator(spec):
    """Load mpssim/ (as a package, by path) and hook it into torch."""
    module = protocol.load_sibling(HERE.parent / "mpssim")
    return module.install(spec.tree, Path(spec.cache).parent / "mps-support", spec.mps_table)


def _emit_findings(state) -> None:
    """The simulator's findings so far (cumulative, after every check: a crash keeps what was seen)."""
    simulator = state.simulator
    if simulator is not None:
        check_run.emit(protocol.Findings(simulator.report(), simulator.stats()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
