"""What one `apply` would do: the rules selected, each file's new bytes, drift, residue, and
the digest that lets a re-apply on an untouched tree skip all of it. Nothing is written here."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from latentsync_mps import __version__
from latentsync_mps.pack.memory_figures import data_path, figures_for
from latentsync_mps.pack.paths import runtime_helper_source
from latentsync_mps.pack.rule import Rule, path_matches
from latentsync_mps.pack.ruleset import Profile, Release, RulePack
from latentsync_mps.port.detection import detect
from latentsync_mps.port.errors import BadInput, ManifestCorrupt
from latentsync_mps.port.manifest import STATE_DIR, Manifest, ManifestError, State, sha256
from latentsync_mps.port.outcome import Drift, Finding
from latentsync_mps.port.rules.base import Change, RuleKind
from latentsync_mps.port.transform import _transform_all
from latentsync_mps.port.tree import FileProblem, _language, _read_or_none, _safe_target, check_tree, walk


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
    # What the plan was asked for, for the no-op record commit keeps (noop.record): the rule
    # pack's folder and the options that chose the rules (profile name, rule ids).
    pack_root: Path | None = None
    request: tuple[str | None, list[str] | None] = (None, None)

    @property
    def changes(self) -> list[Change]:
        return [c for f in self.files for c in f.changes]

    @property
    def residue(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" and path_matches(f.path, self.profile.inference_path)]

    @property
    def writes(self) -> list[FilePlan]:
        return [f for f in self.files + self.restores if f.needs_write]


def select_kinds(profile: Profile, release: Release | None, rule_ids: list[str] | None) -> list[RuleKind]:
    kinds = profile.kinds()
    if rule_ids is not None:
        unknown = set(rule_ids) - {k.rule.id for k in kinds}
        if unknown:
            raise BadInput(f"unknown rule id(s) for profile {profile.name}: {', '.join(sorted(unknown))}")
        return [k for k in kinds if k.rule.id in rule_ids]
    version = release.version if release else None
    return [k for k in kinds if k.rule.default and k.rule.covers_release(version)]


def make_plan(tree: Path, pack: RulePack, profile_name: str | None = None, rule_ids: list[str] | None = None) -> Plan:
    tree = check_tree(tree)
    profile, release = detect(tree, pack, profile_name)
    state = State(tree)
    try:
        previous = state.read()
    except ManifestError as error:
        raise ManifestCorrupt(
            f"{state.manifest_path}: {error}. Restore it, or remove {STATE_DIR}/ if the tree is pristine."
        ) from None
    kinds = select_kinds(profile, release, rule_ids)
    plan = Plan(
        tree,
        profile,
        release,
        [k.rule for k in kinds],
        previous=previous,
        pack_root=pack.root,
        request=(profile_name, rule_ids),
    )
    helper_path = profile.runtime_path
    figures_path = data_path(helper_path)
    candidates = [rel for rel in walk(tree) if _language(rel) is not None or rel in (helper_path, figures_path)]
    # The detection rules too: they replace nothing, but decide the findings and residue a re-apply reports.
    digested = [*plan.rules, *pack.findings]
    if previous is not None and previous.state == "applied" and previous.result:
        now = _digest(digested, {rel: _read_or_none(tree / rel) for rel in candidates})
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
    for rel, new, changes, residue, error in _transform_all(jobs, kinds, profile, pack.detectors()):
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
    plan.digest = _digest(digested, after)
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
    plan.problems = [FileProblem(**p) for p in result.get("problems", [])]
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
