"""Writing a plan and taking it back: the tree lock, commit, revert and status.

Everything that can fail for want of space or permission happens while the tree is untouched
(see commit); a failed write says so in one line (errors.WriteFailed)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from latentsync_mps import __version__
from latentsync_mps.port.errors import ManifestCorrupt, NotPatched, TreeBusy, WriteFailed
from latentsync_mps.port.manifest import (
    STATE_DIR,
    Entry,
    Manifest,
    ManifestError,
    State,
    TreeLock,
    TreeLocked,
    atomic_remove,
    install,
    sha256,
    stage,
)
from latentsync_mps.port.noop import NOOP, record
from latentsync_mps.port.tree import TMP_SUFFIX, FileProblem, _read_or_none, _safe_target, check_tree

if TYPE_CHECKING:
    from latentsync_mps.port.planning import Plan

LOCK_WAIT_ENV = "LSYNC_PORT_LOCK_WAIT"  # seconds a second apply/revert waits for the lock (default 5)


def lock_tree(tree: Path, command: str) -> TreeLock:
    """Take the tree's lock (`.lsync-port/lock`) for `command`; the caller releases it."""
    tree = check_tree(tree)
    lock = TreeLock(tree, f"lsync-port {command} {tree}", float(os.environ.get(LOCK_WAIT_ENV, "5")))
    try:
        lock.acquire()
    except TreeLocked as busy:
        raise TreeBusy(
            f"{tree} is being changed by another lsync-port ({busy}); wait until it ends and run this again "
            f"(if that process hangs, stop it: its lock goes with it)"
        ) from None
    except OSError as error:
        raise WriteFailed(error, command, changed=False) from None
    return lock


def commit(plan: Plan) -> None:
    """Write the plan: manifest first, then per file backup + atomic replace, then 'applied'."""
    state = State(plan.tree)
    old = plan.previous.files if plan.previous else {}
    restored = {f.path for f in plan.restores}
    final: dict[str, Entry] = {
        rel: e for rel, e in old.items() if rel not in restored
    }  # incl. files we could not touch
    for f in plan.files:
        known = list(dict.fromkeys([*old.get(f.path, Entry(None, [])).patched, sha256(f.new)]))
        final[f.path] = Entry(
            None if f.pristine is None else sha256(f.pristine), known, sorted({c.rule_id for c in f.changes})
        )
    rule_ids = [r.id for r in plan.rules]
    release = plan.release.name if plan.release else None
    previous = plan.previous
    result = {
        "digest": plan.digest,
        "matches": dict(plan.matches),
        "files": len([f for f in plan.files if f.pristine is not None]),
        "rewrites": len(plan.changes),
        "drift": [asdict(d) for d in plan.drift],
        "findings": [f.to_json() for f in plan.findings],
        # The files left untouched, and why: a re-apply that changes nothing reports them again
        # (and exits as this apply did).
        "problems": [asdict(p) for p in plan.problems],
    }
    previous_result = {k: v for k, v in (previous.result or {}).items() if k != NOOP} if previous else None
    if (
        plan.unchanged
        or not plan.writes
        and (
            previous is None
            and not final
            or previous is not None
            and (
                previous.state,
                previous.files,
                previous.tool_version,
                previous.rules,
                previous.release,
                previous_result,
            )
            == ("applied", final, __version__, rule_ids, release, result)
        )
    ):
        if previous is not None:
            _refresh_noop_record(state, previous, plan)
        return  # the tree already is what this plan describes
    # Everything that can fail for want of space or permission happens first, while the tree
    # is untouched: the new bytes staged in temp files beside their targets, the backups, and
    # the manifest, which knows both the old and the new entries while files are being swapped.
    manifest = Manifest(__version__, plan.profile.name, release, rule_ids, "applying", old | final, result)
    had_manifest = state.exists()
    staged: dict[str, Path] = {}
    new_backups: list[Path] = []
    try:
        for f in plan.writes:
            if not (f.path in restored and f.pristine is None):
                staged[f.path] = stage(plan.tree / f.path, f.new, f.mode)
        for f in plan.files:
            if f.pristine is not None:
                if not state.backup_path(f.path).exists():
                    new_backups.append(state.backup_path(f.path))
                state.save_backup(f.path, f.pristine)
        state.write(manifest)
    except OSError as error:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        _drop_backups(state, new_backups, had_manifest)
        raise WriteFailed(error, "apply", changed=False) from None
    changed = False
    try:
        for f in plan.writes:  # renames and unlinks: no new space needed
            target = plan.tree / f.path
            if f.path in staged:
                install(staged.pop(f.path), target)
            else:
                atomic_remove(target)
            changed = True
        for rel in restored:
            state.backup_path(rel).unlink(missing_ok=True)
        manifest.files, manifest.state = final, "applied"
        if final:
            manifest.result = {**result, NOOP: record(plan, __version__)}  # of the tree as written
            state.write(manifest)
        else:
            state.remove()
    except OSError as error:  # the "applying" manifest lets apply finish it or revert undo it
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise WriteFailed(error, "apply", changed=changed) from None
    clean_temp_files(plan.tree, [*final, *old])


def _refresh_noop_record(state: State, previous: Manifest, plan: Plan) -> None:
    """A plan that changes nothing found what the last apply left, but the no-op check before it
    did not (a file it need not read was touched, other options named the same rules): store the
    key of the tree as it is now, so the next re-apply is answered early again. Best effort: a
    tree that cannot be written is no reason to fail an apply with nothing to do."""
    if previous.state != "applied" or previous.tool_version != __version__ or not previous.result:
        return
    fresh = record(plan, __version__)
    if previous.result.get(NOOP) == fresh:
        return
    previous.result = {**previous.result, NOOP: fresh}
    try:
        state.write(previous)
    except OSError:
        pass


def _drop_backups(state: State, created: list[Path], had_manifest: bool) -> None:
    """Undo the backups a failed commit saved, so that the state folder is as it was."""
    if not had_manifest:
        state.remove()
        return
    for path in created:
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == state.root:
                break
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: older backups live there


def clean_temp_files(tree: Path, relpaths: list[str]) -> None:
    """Remove temp files that an interrupted atomic write left next to the files it targeted."""
    folders = {(tree / rel).parent for rel in relpaths}
    for folder in folders:
        for stray in folder.glob(f".*{TMP_SUFFIX}"):
            stray.unlink(missing_ok=True)


@dataclass
class FileStatus:
    path: str
    state: str  # "patched" | "original" | "modified" | "missing" | "created"


@dataclass
class TreeStatus:
    tree: Path
    manifest: Manifest | None
    files: list[FileStatus]

    @property
    def summary(self) -> str:
        if self.manifest is None:
            return "not patched"
        states = Counter(f.state for f in self.files)
        if states["modified"] or states["missing"]:
            return "patched, with files changed by hand since"
        if self.manifest.state != "applied" or states["original"]:
            return "partially patched (apply was interrupted): run apply to finish or revert to undo"
        return "patched"


def status(tree: Path) -> TreeStatus:
    tree = check_tree(tree)
    state = State(tree)
    try:
        manifest = state.read()
    except ManifestError as error:
        raise ManifestCorrupt(f"{state.manifest_path}: {error}") from None
    if manifest is None:
        return TreeStatus(tree, None, [])
    files = []
    for rel, entry in sorted(manifest.files.items()):
        data = _read_or_none(tree / rel)
        if data is None:
            files.append(FileStatus(rel, "original" if entry.original is None else "missing"))
            continue
        digest = sha256(data)
        if digest in entry.patched:
            files.append(FileStatus(rel, "patched"))
        elif digest == entry.original:
            files.append(FileStatus(rel, "original"))
        else:
            files.append(FileStatus(rel, "modified"))
    return TreeStatus(tree, manifest, files)


@dataclass
class RevertResult:
    restored: list[str]
    removed: list[str]
    refused: list[FileProblem]


def revert(tree: Path, force: bool = False) -> RevertResult:
    """Put back every byte apply changed. Files edited by hand since are kept unless `force`."""
    tree_status = status(tree)
    manifest = tree_status.manifest
    if manifest is None:
        raise NotPatched(f"{tree_status.tree} is not patched by lsync-port (no {STATE_DIR}/{'manifest.json'})")
    state = State(tree_status.tree)
    result = RevertResult([], [], [])
    writes: list[tuple[Path, bytes, int | None]] = []
    for file in tree_status.files:
        entry = manifest.files[file.path]
        target = tree_status.tree / file.path
        if file.state == "original" or (file.state == "missing" and entry.original is None):
            continue
        if file.state == "modified" and not force:
            result.refused.append(
                FileProblem(file.path, "changed by hand since apply; kept (use --force to restore the original)")
            )
            continue
        unsafe = _safe_target(tree_status.tree, file.path)
        if unsafe:  # a manifest edited to reach out of the tree through a symlinked folder
            result.refused.append(FileProblem(file.path, f"{unsafe}; not written"))
            continue
        if entry.original is None:
            result.removed.append(file.path)
            continue
        try:
            data = state.read_backup(file.path, entry.original)
        except ManifestError as error:
            result.refused.append(FileProblem(file.path, str(error)))
            continue
        writes.append((target, data, target.stat().st_mode & 0o7777 if target.exists() else None))
        result.restored.append(file.path)
    # As in commit: stage every original first, so a full or read-only disk changes nothing.
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data, mode in writes:
            staged.append((stage(target, data, mode), target))
    except OSError as error:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise WriteFailed(error, "revert", changed=False) from None
    changed = False
    try:
        for tmp, target in staged:
            install(tmp, target)
            changed = True
        for rel in result.removed:
            atomic_remove(tree_status.tree / rel)
            changed = True
        if not result.refused:
            clean_temp_files(tree_status.tree, list(manifest.files))
            state.remove()
    except OSError as error:  # the manifest is still there: revert again finishes
        raise WriteFailed(error, "revert", changed=changed) from None
    return result
