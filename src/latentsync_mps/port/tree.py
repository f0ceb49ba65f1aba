"""The tree as files: where it is, which of its files lsync-port reads, and which it may write.

Shared by every step of the engine (detect, plan, transaction, scan)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from latentsync_mps.port.errors import BadInput
from latentsync_mps.port.manifest import STATE_DIR

# Folders that are never part of an upstream's source.
SKIP_DIRS = {".git", STATE_DIR, "__pycache__", ".venv", "venv", "node_modules", "checkpoints", ".mypy_cache"}
REQUIREMENTS_GLOBS = ("requirements*.txt", "**/requirements*.txt")
SHELL_GLOBS = ("*.sh", "**/*.sh")
TMP_SUFFIX = ".lsync-tmp"
SMALL_FILE = 64 * 1024  # a file up to this size is hashed whatever it is


@dataclass
class FileProblem:
    path: str
    reason: str


def check_tree(tree: Path) -> Path:
    if not tree.exists():
        raise BadInput(f"{tree}: no such directory")
    if not tree.is_dir():
        raise BadInput(f"{tree}: not a directory; give the root of a LatentSync checkout")
    return tree.resolve()


def walk(tree: Path) -> list[str]:
    """Every regular file of the tree (relative POSIX paths), not following symlinked folders."""
    found = []
    for folder, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        base = Path(folder).relative_to(tree)
        for name in sorted(files):
            if not name.endswith(TMP_SUFFIX):
                found.append((base / name).as_posix())
    return found


def tree_digest(tree: Path, leave_out: str | None = None) -> str:
    """One hash of the tree's files as walk() lists them (but those under the folder `leave_out`):
    the bytes of every file apply or release detection may read (Python, shell, requirement files,
    and any file up to SMALL_FILE), and size and mtime of the others (demo videos, vocabularies)."""
    digest = hashlib.sha256()
    for rel in walk(tree):
        if leave_out is None or not rel.startswith(leave_out):
            digest.update(f"\n{rel}\0{_fingerprint(tree / rel, rel)}".encode())
    return digest.hexdigest()


def _fingerprint(path: Path, rel: str) -> str:
    try:
        info = path.stat()
        name = rel.rsplit("/", 1)[-1]
        read = info.st_size <= SMALL_FILE or name.endswith((".py", ".sh")) or name.startswith("requirements")
        return hashlib.sha256(path.read_bytes()).hexdigest() if read else f"{info.st_size}:{info.st_mtime_ns}"
    except OSError as error:
        return f"unreadable: {error.errno}"


def _safe_target(tree: Path, rel: str) -> str | None:
    """Why `rel` must not be written, or None when it is a plain file inside the tree."""
    path = tree / rel
    if path.is_symlink():
        return "a symbolic link (not followed for writing)"
    try:
        resolved = path.resolve()
    except OSError as error:  # symlink loops among its parents
        return f"cannot be resolved ({error.strerror or error})"
    if not resolved.is_relative_to(tree):
        return "lies outside the tree through a symbolic link"
    return None


def _language(relpath: str) -> str | None:
    if relpath.endswith(".py"):
        return "python"
    # Imported here: rules/ brings libcst, and walk() serves the no-op check, which must not load it.
    from latentsync_mps.pack.rule import path_matches

    if path_matches(relpath, REQUIREMENTS_GLOBS):
        return "requirements"
    if path_matches(relpath, SHELL_GLOBS):
        return "shell"
    return None


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
