"""The path of one `apply`: detect, select, transform, plan, then commit or just report.

No CLI code here, and nothing from the upstream tree is imported or run: files are read as bytes,
parsed with libcst and written back atomically (see manifest.py). One module per step:

    tree         the tree as files: which are read, which may be written (TreeError, walk)
    detection    which upstream and release a tree is (detect, detect_release)
    transform    each file's single pass, in worker processes for a large tree (transform_file, find)
    planning     what an apply would do, and the no-op digest (make_plan, Plan)
    noop         a re-apply on an untouched tree, answered before any rule is loaded (stored_plan)
    transaction  the tree lock, commit, revert, status (WriteFailed)
    scanning     the finders alone over a tree (scan)

Every public name stays importable from `latentsync_mps.port`. They are imported on first use
(PEP 562): the rule kinds import libcst.matchers, most of a second, and a no-op re-apply, the
lock or an error message needs none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latentsync_mps import __version__

# Each public name and the module of this package (or the package above) that defines it.
_EXPORTS = {
    "detect": ".detection",
    "detect_release": ".detection",
    "Drift": ".planning",
    "FilePlan": ".planning",
    "Plan": ".planning",
    "_digest": ".planning",
    "_pack_relative": ".planning",
    "make_plan": ".planning",
    "select_kinds": ".planning",
    "StoredPlan": ".noop",
    "stored_plan": ".noop",
    "ScanResult": ".scanning",
    "scan": ".scanning",
    "LOCK_WAIT_ENV": ".transaction",
    "FileStatus": ".transaction",
    "RevertResult": ".transaction",
    "TreeStatus": ".transaction",
    "WriteFailed": ".errors",
    "clean_temp_files": ".transaction",
    "commit": ".transaction",
    "lock_tree": ".transaction",
    "revert": ".transaction",
    "status": ".transaction",
    "MAX_NESTING": ".transform",
    "PARALLEL_MIN_FILES": ".transform",
    "find": ".transform",
    "run_rule": ".transform",
    "transform_file": ".transform",
    "REQUIREMENTS_GLOBS": ".tree",
    "SKIP_DIRS": ".tree",
    "TMP_SUFFIX": ".tree",
    "FileProblem": ".tree",
    "check_tree": ".tree",
    "walk": ".tree",
    "stage": ".manifest",
}
_SUBMODULES = {"detection", "noop", "planning", "scanning", "transaction", "transform", "tree"}

__all__ = [  # literal, for linters; the same names as _EXPORTS and __version__
    "Drift",
    "FilePlan",
    "FileProblem",
    "FileStatus",
    "LOCK_WAIT_ENV",
    "MAX_NESTING",
    "PARALLEL_MIN_FILES",
    "Plan",
    "REQUIREMENTS_GLOBS",
    "RevertResult",
    "SKIP_DIRS",
    "ScanResult",
    "StoredPlan",
    "TMP_SUFFIX",
    "TreeStatus",
    "WriteFailed",
    "__version__",
    "_digest",
    "_pack_relative",
    "check_tree",
    "clean_temp_files",
    "commit",
    "detect",
    "detect_release",
    "find",
    "lock_tree",
    "make_plan",
    "revert",
    "run_rule",
    "scan",
    "select_kinds",
    "stage",
    "status",
    "stored_plan",
    "transform_file",
    "walk",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from latentsync_mps.port.detection import detect, detect_release
    from latentsync_mps.port.manifest import stage
    from latentsync_mps.port.noop import StoredPlan, stored_plan
    from latentsync_mps.port.planning import Drift, FilePlan, Plan, _digest, _pack_relative, make_plan, select_kinds
    from latentsync_mps.port.scanning import ScanResult, scan
    from latentsync_mps.port.transaction import (
        LOCK_WAIT_ENV,
        FileStatus,
        RevertResult,
        TreeStatus,
        WriteFailed,
        clean_temp_files,
        commit,
        lock_tree,
        revert,
        status,
    )
    from latentsync_mps.port.transform import MAX_NESTING, PARALLEL_MIN_FILES, find, run_rule, transform_file
    from latentsync_mps.port.tree import (
        REQUIREMENTS_GLOBS,
        SKIP_DIRS,
        TMP_SUFFIX,
        FileProblem,
        check_tree,
        walk,
    )
