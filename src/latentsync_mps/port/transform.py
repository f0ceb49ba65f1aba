"""Every file's single pass (rules and finders together), on all cores for a large tree."""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import libcst as cst

from latentsync_mps.pack.ruleset import Profile
from latentsync_mps.port.finders import find_in_python, find_in_requirements, python_finders
from latentsync_mps.port.outcome import Finding
from latentsync_mps.port.rewrite import run_pass
from latentsync_mps.port.rules.base import Change, FileContext, PythonRuleKind, RuleKind
from latentsync_mps.port.rules.report import DetectionRuleKind
from latentsync_mps.port.rules.requirements import rewrite_requirements
from latentsync_mps.port.rules.shell_lines import rewrite_shell
from latentsync_mps.port.tree import _language, _short

# The line-by-line languages and the pass that runs their rules over one file.
LINE_REWRITERS = {"requirements": rewrite_requirements, "shell": rewrite_shell}


def transform_file(
    relpath: str,
    data: bytes,
    kinds: list[RuleKind],
    ctx: FileContext,
    detectors: Sequence[DetectionRuleKind],
    find_residue: bool = True,
) -> tuple[bytes, list[Change], list[Finding]]:
    """Run every rule that can match `data` over it in one pass; return the new bytes, the
    changes, and (with `find_residue`) what is still CUDA-only afterwards: what the detection-only
    rules (`detectors`: the pack's) reported and no rewrite replaced. Raises on
    unparseable input."""
    active = [k for k in kinds if k.rule.covers_path(relpath) and any(n.encode() in data for n in k.needles())]
    language = _language(relpath)
    if language == "python":
        finders = python_finders(relpath, data, detectors) if find_residue else []
        if not active and not finders:
            return data, [], []
        _check_nesting(data)
        result = run_pass(data, [k for k in active if isinstance(k, PythonRuleKind)], ctx, finders)
        return result.code, result.changes, result.residue
    changes: list[Change] = []
    new = data
    if active and language in LINE_REWRITERS:
        text, changes = LINE_REWRITERS[language](
            data.decode("utf-8-sig"), [k for k in active if k.language == language], ctx
        )
        bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
        new = bom + text.encode("utf-8") if changes else data
    return new, changes, find(relpath, new, detectors) if find_residue else []


# Work shared with forked workers (set just before the pool starts; fork copies it).
_JOBS: dict[str, object] = {}
# Below this many candidate files a process pool costs more than it saves: starting and stopping
# two forked workers takes some 40 ms here, one parsed file 30 to 300 ms.
PARALLEL_MIN_FILES = 8


def _transform_job(job: tuple[str, bytes, bool]) -> tuple[str, bytes, list[Change], list[Finding], str | None]:
    rel, data, find_residue = job
    kinds, profile, detectors = _JOBS["kinds"], _JOBS["profile"], _JOBS["detectors"]
    language = _language(rel)
    ctx = FileContext(rel, profile.runtime_module_for(rel))  # type: ignore[attr-defined]
    try:
        new, changes, residue = transform_file(
            rel, data, [k for k in kinds if k.language == language], ctx, detectors, find_residue
        )  # type: ignore[attr-defined]
    except (cst.ParserSyntaxError, UnicodeDecodeError, SyntaxError, ValueError) as error:
        return rel, data, [], [], f"cannot be parsed, left untouched: {_short(error)}"
    except RecursionError:  # libcst walks trees recursively; generated code can nest deeper than Python allows
        return rel, data, [], [], "nested too deeply for the rewriter (RecursionError), left untouched"
    return rel, new, changes, residue, None


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker must not outlive the apply that started it (a SIGKILLed
    parent cannot shut its pool down). Linux: the kernel sends SIGKILL when the parent dies
    (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread notices the parent is gone."""
    import ctypes
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:  # it died before the prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lsync-port-parent-watch", daemon=True).start()


def _transform_all(
    jobs: list[tuple[str, bytes, bool]],
    kinds: list[RuleKind],
    profile: Profile,
    detectors: Sequence[DetectionRuleKind],
):
    """Every file's pass, on all cores for a large tree (fork only: elsewhere one process)."""
    _JOBS.update(kinds=kinds, profile=profile, detectors=detectors)
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_MIN_FILES or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_transform_job(job) for job in jobs]
    # Largest files first, one at a time: a file's cost grows with its size, and a worker left
    # with the last large file while the others idle is what a size-blind split gets.
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]), reverse=True)
    # What the workers inherit is moved out of the garbage collector's sight first: a collection
    # in a worker would otherwise touch, and so copy, every page of the parent's objects.
    gc.freeze()
    try:
        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            done = dict(zip(order, pool.map(_transform_job, [jobs[i] for i in order]), strict=True))
    finally:
        gc.unfreeze()
    return [done[i] for i in range(len(jobs))]


def run_rule(kind: RuleKind, text: str, path: str, runtime_module: str) -> tuple[str, list[Change]]:
    """One rule over one text, ignoring file selection: what the rule examples exercise."""
    ctx = FileContext(path or "example.py", runtime_module)
    if kind.language in LINE_REWRITERS:
        return LINE_REWRITERS[kind.language](text, [kind], ctx)
    assert isinstance(kind, PythonRuleKind)
    result = run_pass(text, [kind], ctx)
    return result.code.decode("utf-8"), result.changes


# libcst parses and walks trees recursively: beyond ~150 nested brackets Python raises
# RecursionError, and far beyond that the native parser can overflow its stack. Such files
# (generated tables) are refused before parsing.
MAX_NESTING = 100
_BRACKETS = re.compile(rb"[\[\](){}]")


def _check_nesting(data: bytes) -> None:
    depth = deepest = 0
    for match in _BRACKETS.finditer(data):
        depth += 1 if match.group() in b"([{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise RecursionError(f"{deepest} nested brackets")


def find(relpath: str, data: bytes, detectors: Sequence[DetectionRuleKind]) -> list[Finding]:
    """What one file reports, replacements ignored (`scan`), by `detectors` (the pack's)."""
    language = _language(relpath)
    if language == "python":
        _check_nesting(data)
        return find_in_python(relpath, data, detectors)
    if language == "requirements" and any(n.encode() in data for d in detectors for n in d.needles()):
        return find_in_requirements(relpath, data.decode("utf-8-sig", errors="replace"), detectors)
    return []
