"""The path of one `apply`: detect, select, transform, plan, then commit or just report.

No CLI code here, and nothing from the upstream tree is imported or run: files are read as bytes,
parsed with libcst and written back atomically (see manifest.py). One module per step:

    tree         the tree as files: which are read, which may be written (TreeError, walk)
    detection    which upstream and release a tree is (detect, detect_release)
    transform    each file's single pass, in worker processes for a large tree (transform_file, find)
    planning     what an apply would do, and the no-op digest (make_plan, Plan)
    transaction  the tree lock, commit, revert, status (WriteFailed)
    scanning     the finders alone over a tree (scan)

Every public name stays importable from `latentsync_mps.engine`.
"""

from __future__ import annotations

from .. import __version__
from ..manifest import stage
from .detection import detect, detect_release
from .planning import Drift, FilePlan, Plan, _digest, _pack_relative, make_plan, select_kinds
from .scanning import ScanResult, scan
from .transaction import (
    EXIT_LOCKED,
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
from .transform import MAX_NESTING, PARALLEL_MIN_FILES, find, run_rule, transform_file
from .tree import REQUIREMENTS_GLOBS, SKIP_DIRS, TMP_SUFFIX, FileProblem, TreeError, check_tree, walk

__all__ = [
    "EXIT_LOCKED",
    "LOCK_WAIT_ENV",
    "MAX_NESTING",
    "PARALLEL_MIN_FILES",
    "REQUIREMENTS_GLOBS",
    "SKIP_DIRS",
    "TMP_SUFFIX",
    "Drift",
    "FilePlan",
    "FileProblem",
    "FileStatus",
    "Plan",
    "RevertResult",
    "ScanResult",
    "TreeError",
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
    "transform_file",
    "walk",
]
