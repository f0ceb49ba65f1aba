"""What `apply` changed in a tree, and how to undo it.

    <tree>/.lsync-port/manifest.json       tool version, profile, release, rules, one entry per file
    <tree>/.lsync-port/originals/<path>    the pristine bytes of every file that apply changed

Every write is atomic (temp file, fsync, rename, fsync of the folder), and the manifest is written
*before* any file of the tree changes, so a process killed at any instant leaves each file either
original or fully patched, and a manifest that knows how to put it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = ".lsync-port"
MANIFEST = "manifest.json"
ORIGINALS = "originals"
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
    # What the last apply reported (matches, drift, residue) and the digest of the tree and rules
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
            self.root.rmdir()


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:  # keep the mode of the file being replaced; a new file gets the usual 0644
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".lsync-tmp", dir=path.parent)
    except PermissionError as error:  # name the file that could not be written, not the temp file
        raise PermissionError(error.errno, f"cannot write in {path.parent}", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
