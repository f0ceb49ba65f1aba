"""`lsync-port update TREE`: bring a ported git checkout to upstream's newer commit and port it again.

A plain `git pull` on a ported tree (ComfyUI Manager's "Update" is one) either fails, because the
port changed files the new commit also changes ("Your local changes ... would be overwritten"), or
succeeds on the files it replaces and leaves a port that no longer matches the code. Update does
what a person would: take the port off, pull, port again, holding the tree's lock throughout.

What it reads from the manifest and git, per file the port manages:
  patched, and git says changed      the port's bytes: restored from the backup before the pull
  git says unchanged from HEAD       git already put upstream's file there (a pull ran under the
                                     port): nothing to restore; the backup is stale
  changed since apply, git: changed  the user's own edit: update stops and names the files
  added by the port (the helper)     removed before the pull, written again by apply
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from latentsync_mps.port.errors import BadInput, ManifestCorrupt, Refused
from latentsync_mps.port.manifest import STATE_DIR, ManifestError, State, atomic_remove, atomic_write


@dataclass
class Diagnosis:
    """Where a ported git checkout stands, from its manifest and `git status`."""

    ported: bool
    edited: list[str] = field(default_factory=list)  # the user's edits since apply
    replaced: list[str] = field(default_factory=list)  # ported files git has put back to HEAD's
    patched: list[str] = field(default_factory=list)  # still the port's bytes
    added: list[str] = field(default_factory=list)  # files apply created
    committed: list[str] = field(default_factory=list)  # ported files whose port is in a git commit

    def advice(self, tree: Path) -> str | None:
        """One line for `status`: what a pull did or will do to the port, and the fix."""
        if not self.ported:
            return None
        if self.replaced:
            named = ", ".join(self.replaced[:3]) + (", ..." if len(self.replaced) > 3 else "")
            return (
                f"{len(self.replaced)} ported file(s) are upstream's again (a `git pull`, or ComfyUI Manager's "
                f"Update, ran under the port: {named}); `lsync-port update {tree}` ports the new code"
            )
        return (
            f"to update upstream, run `lsync-port update {tree}` (revert, git pull, apply): a plain `git pull`, "
            "or ComfyUI Manager's Update, fails on the ported files or undoes the port"
        )


@dataclass
class UpdateResult:
    before: str  # commits, abbreviated
    after: str
    restored: list[str]
    stale: list[str]  # ported files git had already replaced


def _git(tree: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # a pull that needs a password fails, never hangs
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False, env=environment)


def _repository(tree: Path) -> None:
    done = _git(tree, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise BadInput(
            f"{tree} is not a git checkout, so there is nothing to pull: take the newer upstream by hand, "
            f"then `lsync-port revert {tree}` on the old copy and `lsync-port apply` on the new one"
        )
    if Path(done.stdout.strip()).resolve() != tree.resolve():
        raise BadInput(f"{tree} is inside the git checkout {done.stdout.strip()}: give its root")


def _git_changed(tree: Path, paths: list[str]) -> set[str]:
    """Those of `paths` that differ from HEAD (or are untracked), as git sees them."""
    if not paths:
        return set()
    done = _git(tree, "status", "--porcelain", "-z", "--untracked-files=all", "--", *paths)
    return {entry[3:] for entry in done.stdout.split("\0") if len(entry) > 3}


def diagnose(tree: Path) -> Diagnosis:
    from latentsync_mps.port import transaction

    status = transaction.status(tree)
    if status.manifest is None:
        return Diagnosis(ported=False)
    entries = status.manifest.files
    changed = _git_changed(tree, [f.path for f in status.files])
    found = Diagnosis(ported=True)
    for f in status.files:
        if entries[f.path].original is None:
            found.added.append(f.path)
        elif f.path not in changed and f.state == "patched":  # HEAD has the port's bytes: committed
            found.committed.append(f.path)
        elif f.path not in changed:  # the port's change is gone: git checked out HEAD's file
            found.replaced.append(f.path)
        elif f.state == "patched":
            found.patched.append(f.path)
        elif f.state in ("modified", "missing"):
            found.edited.append(f.path)
    return found


def _commit(tree: Path) -> str:
    return _git(tree, "rev-parse", "--short=12", "HEAD").stdout.strip()


def unport(tree: Path, found: Diagnosis) -> list[str]:
    """Take the port off for a pull: the port's bytes go back to the originals, the files it added
    go, the state folder goes; files git has already replaced are left as git has them."""
    state = State(tree)
    manifest = state.read()
    assert manifest is not None
    restored = []
    for rel in found.patched:
        atomic_write(tree / rel, state.read_backup(rel, manifest.files[rel].original))
        restored.append(rel)
    for rel in found.added:
        if (tree / rel).exists():
            atomic_remove(tree / rel)
    state.remove()
    return restored


def update(tree: Path, pack, pull: list[str] | None = None) -> tuple[UpdateResult, object]:
    """Revert, pull, apply. Returns the result and the new plan (as apply reports it)."""
    from latentsync_mps.port import transaction
    from latentsync_mps.port.planning import make_plan
    from latentsync_mps.port.tree import check_tree

    tree = check_tree(tree)
    _repository(tree)
    try:
        found = diagnose(tree)
    except ManifestError as error:
        raise ManifestCorrupt(f"{tree / STATE_DIR}: {error}") from None
    if found.committed:
        raise Refused(
            f"the port is committed in git ({', '.join(found.committed[:3])}...): update takes a port off "
            f"before pulling, and cannot take off a commit. Undo that commit (git -C {tree} revert or reset), "
            f"or pull and merge by hand, then `lsync-port apply {tree}`"
        )
    if found.edited:
        files = " ".join(found.edited)
        raise Refused(
            f"update keeps your edits, so it stops: {', '.join(found.edited)} changed since apply. Keep them "
            f"aside (git -C {tree} diff -- {files} > my-edits.patch), then `lsync-port revert --force {tree}`, "
            f"`lsync-port update {tree}`, and `git -C {tree} apply --3way my-edits.patch`"
        )
    before = _commit(tree)
    restored = unport(tree, found) if found.ported else []
    done = _git(tree, "pull", "--ff-only", *(pull or []))
    if done.returncode != 0:
        plan = make_plan(tree, pack)
        transaction.commit(plan)  # the tree stays ported, on the commit it had
        message = " ".join((done.stderr or done.stdout).split())
        raise BadInput(
            f"git pull failed ({message}); the tree is ported again at {before}, as it was. Fix what git names "
            f"(a local commit or a change of yours to a file upstream changed), then run update again"
        )
    plan = make_plan(tree, pack)
    transaction.commit(plan)
    return UpdateResult(before, _commit(tree), restored, found.replaced), plan
