"""Every write of apply and revert is atomic, shown step by step instead of by killing at random.

An audit hook (sys.addaudithook) sees every open and rename this process makes; while a write is
watched it checks, at each of them, that the destination still holds its old bytes in full, that
no file is ever opened for writing under its own name, and that the one rename which makes the
new bytes visible renames a complete, fsynced temp file of the same folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import tree_hashes

from latentsync_mps.port import transaction
from latentsync_mps.port.manifest import STATE_DIR, atomic_write
from latentsync_mps.port.planning import make_plan

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT
TMP_SUFFIX = ".lsync-tmp"


class Watch:
    """What the audit hook saw while active: opens for writing, renames, fsyncs, and any breach."""

    def __init__(self, expected: dict[Path, bytes | None], new: dict[Path, bytes]):
        self.expected = expected  # destination -> its bytes before the write (None: did not exist)
        self.new = new  # destination -> the bytes the write must make visible
        self.renamed: list[tuple[Path, Path]] = []
        self.written: list[Path] = []
        self.fsynced: list[tuple[int, int]] = []  # (st_dev, st_ino) of every fsync'd file or folder
        self.breaches: list[str] = []
        self.busy = False

    def destinations_unchanged(self, when: str) -> None:
        for path, old in self.expected.items():
            if path in {dst for _, dst in self.renamed}:
                continue  # its rename has happened: new bytes are allowed from here on
            now = path.read_bytes() if path.exists() else None
            if now != old:
                self.breaches.append(f"{path.name} changed before its rename ({when})")

    def event(self, name: str, args: tuple) -> None:
        if name == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path, flags = Path(os.fsdecode(args[0])), args[2] or 0
            if flags & WRITE_FLAGS:
                self.written.append(path)
                if not path.name.endswith(TMP_SUFFIX):
                    self.breaches.append(f"{path} opened for writing under its own name (flags {flags:#o})")
            self.destinations_unchanged(f"open of {path.name}")
        elif name == "os.rename":  # os.replace raises this event too
            src, dst = Path(os.fsdecode(args[0])), Path(os.fsdecode(args[1]))
            self.destinations_unchanged(f"rename to {dst.name}")
            if src.parent != dst.parent or not src.name.endswith(TMP_SUFFIX):
                self.breaches.append(f"{dst} replaced by {src}, not by a temp file next to it")
            else:
                info = src.stat()
                if (info.st_dev, info.st_ino) not in self.fsynced:
                    self.breaches.append(f"{src.name} was renamed over {dst.name} before it was fsynced")
                if dst in self.expected and src.read_bytes() != self.new[dst]:
                    self.breaches.append(f"{src.name} does not hold the complete new bytes of {dst.name}")
            self.renamed.append((src, dst))


WATCH: Watch | None = None
HOOKED: list[bool] = []


def _hook(name: str, args: tuple) -> None:
    # Installed once for the session (audit hooks cannot be removed); idle unless a test watches.
    watch = WATCH
    if watch is None or watch.busy or name not in ("open", "os.rename"):
        return
    watch.busy = True  # the checks read files themselves: do not watch those reads
    try:
        watch.event(name, args)
    finally:
        watch.busy = False


def stop_watching() -> None:
    global WATCH
    WATCH = None


@pytest.fixture
def watch(monkeypatch):
    """Start watching writes; os.fsync is wrapped to record which file each call made durable."""
    if not HOOKED:  # once, when a test first needs it: it stays for the session, idle
        sys.addaudithook(_hook)
        HOOKED.append(True)
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        real_fsync(fd)
        if WATCH is not None:
            WATCH.fsynced.append((info.st_dev, info.st_ino))

    monkeypatch.setattr(os, "fsync", fsync)

    def start(expected: dict[Path, bytes | None], new: dict[Path, bytes] | None = None) -> Watch:
        global WATCH
        WATCH = Watch(expected, new or {})
        return WATCH

    yield start
    stop_watching()


def test_atomic_write_changes_the_destination_only_by_one_rename(tmp_path, watch):
    path = tmp_path / "model.py"
    old, new = b"old bytes\n" * 1000, b"new bytes\n" * 2000
    path.write_bytes(old)
    path.chmod(0o755)
    seen = watch({path: old}, {path: new})
    atomic_write(path, new)
    stop_watching()
    assert seen.breaches == []
    assert path.read_bytes() == new and (path.stat().st_mode & 0o777) == 0o755
    # Exactly one rename, of a temp file in the same folder, made the new bytes visible ...
    assert [dst for _, dst in seen.renamed] == [path]
    (src, _), parent = seen.renamed[0], path.parent.stat()
    assert src.parent == path.parent and not src.exists()
    # ... and the folder was fsynced after it, so that the rename itself survives a power cut.
    assert (parent.st_dev, parent.st_ino) in seen.fsynced
    assert [p for p in seen.written if p.parent == tmp_path] == [src]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]


def test_the_watch_catches_a_write_in_place(tmp_path, watch):
    """The check itself can fail: a plain in-place write is seen at once."""
    path = tmp_path / "model.py"
    path.write_bytes(b"old")
    seen = watch({path: b"old"}, {path: b"new"})
    path.write_bytes(b"new")
    stop_watching()
    assert any("opened for writing under its own name" in b for b in seen.breaches), seen.breaches


def test_a_failing_write_leaves_the_destination_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.py"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]


def test_apply_and_revert_write_every_file_atomically(fixture_tree, pack, watch):
    """The whole port and its revert, watched: the tree's files, the backups and the manifest."""
    pristine = tree_hashes(fixture_tree)
    plan = make_plan(fixture_tree, pack)
    targets = {fixture_tree / f.path: f.new for f in plan.files if f.new is not None}
    assert len(targets) >= 10, "the fixture's port should rewrite many files"
    before = {path: path.read_bytes() if path.exists() else None for path in targets}
    seen = watch(before, targets)
    transaction.commit(plan)
    stop_watching()
    assert seen.breaches == []
    renamed = {dst for _, dst in seen.renamed}
    assert set(targets) <= renamed, "every rewritten file became visible by a rename"
    # The manifest that can undo the port is on disk before the first file of the tree changes.
    order = [dst for _, dst in seen.renamed]
    assert order.index(fixture_tree / STATE_DIR / "manifest.json") < min(order.index(p) for p in targets)
    assert any(STATE_DIR + "/originals" in dst.as_posix() for dst in renamed), "backups are written atomically too"

    # Revert: every original comes back by a rename too (the helper apply created is unlinked).
    originals = {path: old for path, old in before.items() if old is not None}
    seen = watch({path: path.read_bytes() for path in originals}, originals)
    transaction.revert(fixture_tree)
    stop_watching()
    assert seen.breaches == []
    assert set(originals) <= {dst for _, dst in seen.renamed}
    assert tree_hashes(fixture_tree) == pristine
