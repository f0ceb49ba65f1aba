"""What `apply` changed in a tree, and how to undo it.

    <tree>/.lsync-port/manifest.json       tool version, profile, release, rules, one entry per file
    <tree>/.lsync-port/originals/<path>    the pristine bytes of every file that apply changed
    <tree>/.lsync-port/lock                who runs apply or revert on the tree now (TreeLock)

Every write is atomic (temp file, fsync, rename, fsync of the folder), and the manifest is written
*before* any file of the tree changes, so a process killed at any instant leaves each file either
original or fully patched, and a manifest that knows how to put it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = ".lsync-port"
MANIFEST = "manifest.json"
ORIGINALS = "originals"
LOCK = "lock"
FORMAT = 1


class ManifestError(Exception):
    """The manifest is missing, unreadable or was edited into something this tool cannot trust."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """One file apply manages. `original` is None for a file apply created (the runtime helper)."""

    original: str | None
    patched: list[str]  # hashes apply has written here (older versions too, during an upgrade)
    rules: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    tool_version: str
    profile: str
    release: str | None
    rules: list[str]
    state: str  # "applying" while files are being written, "applied" once all are
    files: dict[str, Entry]
    # What the last apply reported (matches, drift, residue, problems) and the digest of the tree and rules
    # it saw afterwards: an apply that finds the same digest has nothing to do (see engine).
    result: dict | None = None

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.pop("format") != FORMAT:
                raise ManifestError("it was written by an incompatible version of lsync-port")
            files = {
                str(path): Entry(
                    original=entry["original"],
                    patched=[str(h) for h in entry["patched"]],
                    rules=[str(r) for r in entry.get("rules", [])],
                )
                for path, entry in data.pop("files").items()
            }
            manifest = cls(files=files, **data)
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ManifestError(f"it is not a valid lsync-port manifest ({type(error).__name__}: {error})") from None
        for path in manifest.files:
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise ManifestError(f"it names a path outside the tree: {path!r}")
        return manifest


class State:
    """The `.lsync-port/` folder of one tree."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.root = tree / STATE_DIR
        self.manifest_path = self.root / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def read(self) -> Manifest | None:
        if not self.manifest_path.exists():
            return None
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"cannot be read: {error}") from None
        return Manifest.from_json(text)

    def write(self, manifest: Manifest) -> None:
        atomic_write(self.manifest_path, manifest.to_json().encode("utf-8"))

    def backup_path(self, relpath: str) -> Path:
        return self.root / ORIGINALS / relpath

    def read_backup(self, relpath: str, expected_hash: str) -> bytes:
        """The pristine bytes of a file, checked against the hash the manifest recorded."""
        path = self.backup_path(relpath)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ManifestError(f"the backup of {relpath} is missing ({error.strerror})") from None
        if sha256(data) != expected_hash:
            raise ManifestError(f"the backup of {relpath} does not match its recorded hash")
        return data

    def save_backup(self, relpath: str, data: bytes) -> None:
        path = self.backup_path(relpath)
        if path.exists() and path.read_bytes() == data:
            return
        atomic_write(path, data)

    def remove(self) -> None:
        """Delete the whole state folder; the manifest goes last so an interruption stays revertible."""
        originals = self.root / ORIGINALS
        if originals.exists():
            for path in sorted(originals.rglob("*"), reverse=True):
                path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
            originals.rmdir()
        if self.manifest_path.exists():
            self.manifest_path.unlink()
        if self.root.exists():
            for stray in self.root.glob("*.lsync-tmp"):  # a manifest write that was killed
                stray.unlink()
            if not (self.root / LOCK).exists():  # else the lock's release removes the folder
                self.root.rmdir()


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new file, never half."""
    install(stage(path, data, mode), path)


def stage(path: Path, data: bytes, mode: int | None = None) -> Path:
    """The first half of atomic_write: `data` in a synced temp file beside `path`, which is not
    touched yet. Everything that can run out of space or permission happens here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:  # keep the mode of the file being replaced; a new file gets the usual 0644
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".lsync-tmp", dir=path.parent)
    except OSError as error:  # name the file that could not be written, not the temp file
        raise type(error)(error.errno, f"cannot write in {path.parent}", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise
    return Path(tmp)


def install(tmp: Path, path: Path) -> None:
    """The second half of atomic_write: the staged temp file takes the place of `path`."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


class TreeLocked(Exception):
    """Another process holds the tree's lock. `holder` is what it wrote there (may be {})."""

    def __init__(self, lock: Path, holder: dict) -> None:
        self.lock, self.holder = lock, holder
        super().__init__(describe_holder(holder))


def describe_holder(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, int | float) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, `{holder.get('command', '?')}`, since {when}"


class TreeLock:
    """`<tree>/.lsync-port/lock`: one apply or revert at a time on a tree, as git's index.lock.

    The lock is an advisory `flock` on that file, which the kernel drops when its holder dies
    however it dies (SIGKILL included): a lock file left by a dead process is therefore stale by
    construction, and the next run takes it over (`stale` then says whose it was). The file
    holds the holder's pid, host, command and start time, for the message a waiting process
    gives. A second process waits up to `wait` seconds, then raises TreeLocked. POSIX only: on
    a system without fcntl no lock is taken.
    """

    def __init__(self, tree: Path, command: str, wait: float = 5.0) -> None:
        self.root = tree / STATE_DIR
        self.path = self.root / LOCK
        self.command = command
        self.wait = wait
        self.stale: dict | None = None  # the holder of a lock file taken over from a dead process
        self._fd: int | None = None

    def __enter__(self) -> TreeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        deadline = time.monotonic() + self.wait
        while True:
            self.root.mkdir(exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the holder removed the folder as it let go: try again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise TreeLocked(self.path, holder) from None
                time.sleep(0.05)
                continue
            except BaseException:
                os.close(fd)
                raise
            # The holder we waited for unlinks the file before it lets go: a lock on that old
            # file is no lock on the path. Only a lock on the file the path names now counts.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)
                continue
            previous = _read_holder(fd)
            if previous:  # written by a process that died without letting go (killed)
                self.stale = previous
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "since": int(time.time()),
                "python": sys.executable,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding it, so that no one can lock this file as the path's lock.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        try:
            self.root.rmdir()  # only when empty: a reverted tree has no state folder left
        except OSError:
            pass


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
