"""The path of one `apply`: detect, select, transform, plan, then commit or just report.

No CLI code here, and nothing from the upstream tree is imported or run: files are read as bytes,
parsed with libcst and written back atomically (see manifest.py).
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import libcst as cst

from . import __version__
from .findings import PY_NEEDLES, REQ_NEEDLES, Finding, PythonFinder, find_in_python, find_in_requirements
from .manifest import (
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
from .memory_figures import data_path, figures_for
from .resources import runtime_helper_source
from .rewrite import run_pass
from .rules.base import Change, FileContext, PythonRuleKind, Rule, RuleKind, path_matches
from .rules.requirements import rewrite_requirements
from .rules.shell_lines import rewrite_shell
from .ruleset import Profile, Release, RulePack

# Folders that are never part of an upstream's source.
SKIP_DIRS = {".git", STATE_DIR, "__pycache__", ".venv", "venv", "node_modules", "checkpoints", ".mypy_cache"}
REQUIREMENTS_GLOBS = ("requirements*.txt", "**/requirements*.txt")
SHELL_GLOBS = ("*.sh", "**/*.sh")
# The line-by-line languages and the pass that runs their rules over one file.
LINE_REWRITERS = {"requirements": rewrite_requirements, "shell": rewrite_shell}
TMP_SUFFIX = ".lsync-tmp"


class TreeError(Exception):
    """The tree cannot be worked on. `exit_code` is what the CLI returns (see cli.py)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


EXIT_LOCKED = 12  # cli.Exit.LOCKED
LOCK_WAIT_ENV = "LSYNC_PORT_LOCK_WAIT"  # seconds a second apply/revert waits for the lock (default 5)

# What a failed write means, in words, and what the user can do about it.
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on the device", "free some space and run it again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run it again"),
    errno.EACCES: ("permission denied", "make the tree writable for this user and run it again"),
    errno.EPERM: ("permission denied", "make the tree writable for this user and run it again"),
    errno.EROFS: (
        "read-only file system",
        "copy the tree somewhere writable (or remount it read-write) and run it again",
    ),
}


class WriteFailed(TreeError):
    """The file system refused a write. `changed` tells whether any file of the tree had changed."""

    def __init__(self, error: OSError, command: str, changed: bool) -> None:
        what, todo = _WRITE_FAILURES.get(error.errno or 0, (error.strerror or str(error), "fix that and run it again"))
        where = f"{error.filename}: " if error.filename else ""
        if changed:
            outcome = (
                "some files are patched, the rest are untouched (none half-written); "
                f"`lsync-port {command}` again finishes the job once you {todo.removesuffix(' and run it again')}"
            )
        else:
            outcome = f"nothing was changed; {todo}"
        super().__init__(f"{command}: {where}{what}. {outcome[0].upper()}{outcome[1:]}.", 2)
        self.error, self.changed = error, changed


def lock_tree(tree: Path, command: str) -> TreeLock:
    """Take the tree's lock (`.lsync-port/lock`) for `command`; the caller releases it."""
    tree = check_tree(tree)
    lock = TreeLock(tree, f"lsync-port {command} {tree}", float(os.environ.get(LOCK_WAIT_ENV, "5")))
    try:
        lock.acquire()
    except TreeLocked as busy:
        raise TreeError(
            f"{tree} is being changed by another lsync-port ({busy}); wait until it ends and run this again "
            f"(if that process hangs, stop it: its lock goes with it)",
            EXIT_LOCKED,
        ) from None
    except OSError as error:
        raise WriteFailed(error, command, changed=False) from None
    return lock


@dataclass
class FileProblem:
    path: str
    reason: str


@dataclass
class Drift:
    """A rule that should have matched here and did not: upstream moved under it."""

    rule_id: str
    file: str
    expected: int
    found: int


@dataclass
class FilePlan:
    path: str
    pristine: bytes | None  # None: the file is new (the runtime helper)
    new: bytes
    current: bytes | None  # what is on disk now
    changes: list[Change]
    mode: int | None = None

    @property
    def needs_write(self) -> bool:
        return self.current != self.new


@dataclass
class Plan:
    tree: Path
    profile: Profile
    release: Release | None
    rules: list[Rule]
    files: list[FilePlan] = field(default_factory=list)
    restores: list[FilePlan] = field(default_factory=list)  # managed before, no longer changed
    matches: Counter[str] = field(default_factory=Counter)
    drift: list[Drift] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # what is still CUDA-only afterwards
    problems: list[FileProblem] = field(default_factory=list)  # files left untouched, and why
    warnings: list[str] = field(default_factory=list)
    previous: Manifest | None = None
    digest: str = ""  # of the rules and of the tree as it will be after this plan (see _digest)
    unchanged: bool = False  # the tree and rules are as the last apply left them: nothing was parsed
    summary: dict = field(default_factory=dict)  # for an unchanged plan: the last apply's counts

    @property
    def changes(self) -> list[Change]:
        return [c for f in self.files for c in f.changes]

    @property
    def residue(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" and path_matches(f.path, self.profile.inference_path)]

    @property
    def writes(self) -> list[FilePlan]:
        return [f for f in self.files + self.restores if f.needs_write]


# ---------------------------------------------------------------------------------------------
# Detection


def check_tree(tree: Path) -> Path:
    if not tree.exists():
        raise TreeError(f"{tree}: no such directory", 2)
    if not tree.is_dir():
        raise TreeError(f"{tree}: not a directory; give the root of a LatentSync checkout", 2)
    return tree.resolve()


def detect(tree: Path, pack: RulePack, profile_name: str | None = None) -> tuple[Profile, Release | None]:
    """Which upstream (profile) and which of its known releases this tree is."""
    if profile_name is not None:
        if profile_name not in pack.profiles:
            raise TreeError(f"unknown profile '{profile_name}' (known: {', '.join(sorted(pack.profiles))})", 2)
        profile = pack.profiles[profile_name]
    else:
        candidates = [p for p in pack.profiles.values() if all((tree / d).exists() for d in p.detect)]
        if not candidates:
            wanted = "; ".join(f"{p.name}: {', '.join(p.detect)}" for p in pack.profiles.values())
            raise TreeError(
                f"{tree} is not a recognised upstream tree (looked for {wanted}). "
                "Give the root of a LatentSync or ComfyUI-LatentSyncWrapper checkout, or --profile.",
                3,
            )
        profile = max(candidates, key=lambda p: p.priority)
    return profile, detect_release(tree, profile)


def detect_release(tree: Path, profile: Profile) -> Release | None:
    """The newest known release whose fingerprint fits; None when none does."""

    def text(rel: str) -> str:
        try:
            return (tree / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    for release in sorted(profile.releases, key=lambda r: r.version, reverse=True):
        fp = release.fingerprint
        if (
            all((tree / p).exists() for p in fp.present)
            and not any((tree / p).exists() for p in fp.absent)
            and all(needle in text(file) for file, needle in fp.contains)
            and not any(needle in text(file) for file, needle in fp.lacks)
        ):
            return release
    return None


# ---------------------------------------------------------------------------------------------
# Selection


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


def select_kinds(profile: Profile, release: Release | None, rule_ids: list[str] | None) -> list[RuleKind]:
    kinds = profile.kinds()
    if rule_ids is not None:
        unknown = set(rule_ids) - {k.rule.id for k in kinds}
        if unknown:
            raise TreeError(f"unknown rule id(s) for profile {profile.name}: {', '.join(sorted(unknown))}", 2)
        return [k for k in kinds if k.rule.id in rule_ids]
    version = release.version if release else None
    return [k for k in kinds if k.rule.default and k.rule.covers_release(version)]


# ---------------------------------------------------------------------------------------------
# Transformation


def transform_file(
    relpath: str, data: bytes, kinds: list[RuleKind], ctx: FileContext, find_residue: bool = True
) -> tuple[bytes, list[Change], list[Finding]]:
    """Run every rule that can match `data` over it in one pass; return the new bytes, the
    changes, and (with `find_residue`) what is still CUDA-only afterwards. Raises on unparseable input."""
    active = [k for k in kinds if k.rule.covers_path(relpath) and any(n.encode() in data for n in k.needles())]
    language = _language(relpath)
    if language == "python":
        if not active and not (find_residue and any(n in data for n in PY_NEEDLES)):
            return data, [], []
        _check_nesting(data)
        finders = [PythonFinder(relpath)] if find_residue else []
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
    return new, changes, find(relpath, new) if find_residue else []


# Work shared with forked workers (set just before the pool starts; fork copies it).
_JOBS: dict[str, object] = {}
# Below this many candidate files a process pool costs more than it saves.
PARALLEL_MIN_FILES = 24


def _transform_job(job: tuple[str, bytes, bool]) -> tuple[str, bytes, list[Change], list[Finding], str | None]:
    rel, data, find_residue = job
    kinds, profile = _JOBS["kinds"], _JOBS["profile"]
    language = _language(rel)
    ctx = FileContext(rel, profile.runtime_module_for(rel))  # type: ignore[attr-defined]
    try:
        new, changes, residue = transform_file(
            rel, data, [k for k in kinds if k.language == language], ctx, find_residue
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


def _transform_all(jobs: list[tuple[str, bytes, bool]], kinds: list[RuleKind], profile: Profile):
    """Every file's pass, on all cores for a large tree (fork only: elsewhere one process)."""
    _JOBS.update(kinds=kinds, profile=profile)
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_MIN_FILES or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_transform_job(job) for job in jobs]
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        return list(pool.map(_transform_job, jobs, chunksize=max(1, len(jobs) // (workers * 4))))


def run_rule(kind: RuleKind, text: str, path: str, runtime_module: str) -> tuple[str, list[Change]]:
    """One rule over one text, ignoring file selection: what the rule examples exercise."""
    ctx = FileContext(path or "example.py", runtime_module)
    if kind.language in LINE_REWRITERS:
        return LINE_REWRITERS[kind.language](text, [kind], ctx)
    assert isinstance(kind, PythonRuleKind)
    result = run_pass(text, [kind], ctx)
    return result.code.decode("utf-8"), result.changes


def _language(relpath: str) -> str | None:
    if relpath.endswith(".py"):
        return "python"
    if path_matches(relpath, REQUIREMENTS_GLOBS):
        return "requirements"
    if path_matches(relpath, SHELL_GLOBS):
        return "shell"
    return None


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


def find(relpath: str, data: bytes) -> list[Finding]:
    language = _language(relpath)
    if language == "python":
        _check_nesting(data)
        return find_in_python(relpath, data)
    if language == "requirements" and any(n in data for n in REQ_NEEDLES):
        return find_in_requirements(relpath, data.decode("utf-8-sig", errors="replace"))
    return []


# ---------------------------------------------------------------------------------------------
# Planning


def make_plan(tree: Path, pack: RulePack, profile_name: str | None = None, rule_ids: list[str] | None = None) -> Plan:
    tree = check_tree(tree)
    profile, release = detect(tree, pack, profile_name)
    state = State(tree)
    try:
        previous = state.read()
    except ManifestError as error:
        raise TreeError(
            f"{state.manifest_path}: {error}. Restore it, or remove {STATE_DIR}/ if the tree is pristine.", 8
        ) from None
    kinds = select_kinds(profile, release, rule_ids)
    plan = Plan(tree, profile, release, [k.rule for k in kinds], previous=previous)
    helper_path = profile.runtime_path
    figures_path = data_path(helper_path)
    candidates = [rel for rel in walk(tree) if _language(rel) is not None or rel in (helper_path, figures_path)]
    if previous is not None and previous.state == "applied" and previous.result:
        now = _digest(plan.rules, {rel: _read_or_none(tree / rel) for rel in candidates})
        if now == previous.result.get("digest"):
            return _unchanged_plan(plan, previous.result, now)

    jobs: list[tuple[str, bytes, bool]] = []
    currents: dict[str, bytes | None] = {}
    for rel in candidates:
        if rel == helper_path or _language(rel) is None:
            continue
        pristine, current, problem = _pristine(tree, rel, state, previous)
        if problem:
            plan.problems.append(FileProblem(rel, problem))
            continue
        assert pristine is not None
        currents[rel] = current
        # Residue is what stays CUDA-only on the inference path; `scan` reports the rest.
        jobs.append((rel, pristine, path_matches(rel, profile.inference_path)))

    pristines = {rel: data for rel, data, _ in jobs}
    for rel, new, changes, residue, error in _transform_all(jobs, kinds, profile):
        if error:
            plan.problems.append(FileProblem(rel, error))
            continue
        pristine, current = pristines[rel], currents[rel]
        if changes:
            reason = _safe_target(tree, rel)
            if reason:
                plan.problems.append(FileProblem(rel, f"{reason}; left untouched"))
                continue
            mode = (tree / rel).stat().st_mode & 0o7777
            plan.files.append(FilePlan(rel, pristine, new, current, changes, mode))
            plan.matches.update(c.rule_id for c in changes)
        elif previous and rel in previous.files and pristine != current:
            plan.restores.append(FilePlan(rel, pristine, pristine, current, []))
        plan.findings += residue

    if plan.files:
        helper = runtime_helper_source().encode("utf-8")
        current = _read_or_none(tree / helper_path)
        reason = _safe_target(tree, helper_path)
        if current is not None and not (previous and helper_path in previous.files):
            plan.problems.append(FileProblem(helper_path, "exists and was not written by lsync-port; not overwritten"))
        elif reason:
            plan.problems.append(FileProblem(helper_path, f"{reason}; the runtime helper cannot be written"))
        else:
            plan.files.append(FilePlan(helper_path, None, helper, current, [], 0o644))
            # The release's forecast figures, which the helper's dtype policy reads (memory_figures.py).
            figures = figures_for(release)
            current = _read_or_none(tree / figures_path)
            owned = current is None or (previous is not None and figures_path in previous.files)
            if figures is not None and owned and not _safe_target(tree, figures_path):
                plan.files.append(FilePlan(figures_path, None, figures, current, [], 0o644))
    if previous is not None:
        # A managed file that no longer exists in the plan and is not a source file any more
        # (the helper of an apply that now changes nothing) is removed again.
        planned = {f.path for f in plan.files} | {f.path for f in plan.restores}
        for rel, entry in previous.files.items():
            if rel not in planned and entry.original is None and (tree / rel).exists():
                plan.restores.append(FilePlan(rel, None, b"", _read_or_none(tree / rel), []))

    plan.drift = _drift(plan, kinds)
    plan.warnings += _git_warnings(tree, previous)
    after = {rel: currents.get(rel) for rel in candidates} | {f.path: f.new for f in plan.files}
    after |= {f.path: (None if f.pristine is None else f.new) for f in plan.restores}
    plan.digest = _digest(plan.rules, after)
    return plan


def _digest(rules: list[Rule], files: dict[str, bytes | None]) -> str:
    """One hash of the tool version, the rules (all their fields) and every candidate file.

    A rule's `source` is hashed as `<profile folder>/<file>`, not as the absolute path it was
    loaded from: the same rules installed elsewhere (another venv, a wheel) give the same digest."""
    stable = [repr(replace(rule, source=_pack_relative(rule.source))) for rule in rules]
    digest = hashlib.sha256(f"{__version__}\n{stable}".encode())
    for rel in sorted(files):
        data = files[rel]
        digest.update(f"\n{rel}\0{'-' if data is None else sha256(data)}".encode())
    return digest.hexdigest()


def _pack_relative(source: str) -> str:
    path = Path(source)
    return f"{path.parent.name}/{path.name}"


def _unchanged_plan(plan: Plan, result: dict, digest: str) -> Plan:
    """The plan of a re-apply on a tree nothing touched since: the last report, no work."""
    plan.unchanged = True
    plan.digest = digest
    plan.matches = Counter(result.get("matches", {}))
    plan.summary = {"files": result.get("files", 0), "rewrites": result.get("rewrites", 0)}
    plan.drift = [Drift(**d) for d in result.get("drift", [])]
    plan.findings = [Finding(**f) for f in result.get("findings", [])]
    return plan


def _pristine(
    tree: Path, rel: str, state: State, previous: Manifest | None
) -> tuple[bytes | None, bytes | None, str | None]:
    """(the file as upstream shipped it, the file now, a problem that stops us touching it)."""
    path = tree / rel
    try:
        current = path.read_bytes()
    except OSError as error:
        return None, None, f"cannot be read: {error.strerror}"
    entry = previous.files.get(rel) if previous else None
    if entry is None or entry.original is None:
        return current, current, None
    digest = sha256(current)
    if digest == entry.original:
        return current, current, None
    if digest in entry.patched:
        try:
            return state.read_backup(rel, entry.original), current, None
        except ManifestError as error:
            return None, current, str(error)
    return None, current, "changed by hand since lsync-port patched it; left untouched (revert --force restores it)"


def _drift(plan: Plan, kinds: list[RuleKind]) -> list[Drift]:
    version = plan.release.version if plan.release else None
    per_file: Counter[tuple[str, str]] = Counter((c.rule_id, c.path) for c in plan.changes)
    drift = []
    waived = plan.release.nothing_to_port if plan.release else {}
    for kind in kinds:
        for expect in kind.rule.expect:
            if kind.rule.id in waived:
                continue
            if version is not None and not expect.releases.contains(version, prereleases=True):
                continue
            if expect.profile is not None and expect.profile != plan.profile.name:
                continue
            found = sum(
                n
                for (rule_id, path), n in per_file.items()
                if rule_id == kind.rule.id and path_matches(path, [expect.file])
            )
            if found < expect.min:
                drift.append(Drift(kind.rule.id, expect.file, expect.min, found))
    return drift


def _git_warnings(tree: Path, previous: Manifest | None) -> list[str]:
    if not (tree / ".git").exists():
        return []
    try:
        out = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    managed = set(previous.files) if previous else set()
    dirty = [line[3:] for line in out.splitlines() if line[3:] not in managed]
    if dirty:
        return [
            f"the git tree has {len(dirty)} uncommitted change(s) of its own (e.g. {dirty[0]}); "
            "lsync-port backs up what it changes, but commit your work first to be safe"
        ]
    return []


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ---------------------------------------------------------------------------------------------
# Commit, revert, status


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
    }
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
                previous.result,
            )
            == ("applied", final, __version__, rule_ids, release, result)
        )
    ):
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
            state.write(manifest)
        else:
            state.remove()
    except OSError as error:  # the "applying" manifest lets apply finish it or revert undo it
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise WriteFailed(error, "apply", changed=changed) from None
    clean_temp_files(plan.tree, [*final, *old])


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
        raise TreeError(f"{state.manifest_path}: {error}", 8) from None
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
        raise TreeError(f"{tree_status.tree} is not patched by lsync-port (no {STATE_DIR}/{'manifest.json'})", 4)
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


# ---------------------------------------------------------------------------------------------
# Scan


@dataclass
class ScanResult:
    tree: Path
    profile: Profile | None
    findings: list[Finding]
    problems: list[FileProblem]
    release: Release | None = None
    drift: list[Drift] = field(default_factory=list)  # rules that would match nothing where expected

    def in_scope(self, finding: Finding) -> bool:
        return self.profile is None or path_matches(finding.path, self.profile.inference_path)


def scan(tree: Path, pack: RulePack, profile_name: str | None = None) -> ScanResult:
    """The finders alone, over the tree as it is now. Changes nothing."""
    tree = check_tree(tree)
    try:
        profile, _ = detect(tree, pack, profile_name)
    except TreeError as error:
        if error.exit_code != 3:
            raise
        profile = None  # any tree can be scanned; only the inference-path scope needs a profile
    result = ScanResult(tree, profile, [], [])
    if profile is not None:
        # Drift is about the upstream code, so it is judged on a dry run (from the originals in a
        # ported tree); nothing is written.
        plan = make_plan(tree, pack, profile.name)
        result.release, result.drift = plan.release, plan.drift
    for rel in walk(tree):
        if _language(rel) is None:
            continue
        data = _read_or_none(tree / rel)
        if data is None:
            result.problems.append(FileProblem(rel, "cannot be read"))
            continue
        try:
            result.findings += find(rel, data)
        except (cst.ParserSyntaxError, UnicodeDecodeError) as error:
            result.problems.append(FileProblem(rel, f"cannot be parsed: {_short(error)}"))
        except RecursionError:
            result.problems.append(FileProblem(rel, "nested too deeply to scan (RecursionError)"))
    return result
