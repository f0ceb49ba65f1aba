"""A re-apply on a tree that nothing touched since the last apply, answered from the manifest
before any rule is loaded: loading the rule kinds imports libcst.matchers, most of a second, and
the full plan's own no-op digest (planning._digest) needs the parsed rules.

Each apply stores in the manifest, beside its result, a key of everything its plan depended on
(`inputs_key`) and what its report shows beyond the result (profile, release, rules). A later
apply whose key is the same prints that report again and changes nothing. The key covers:
  - lsync-port's version and the bytes of its own package (an editable install changes without
    a new version)
  - the bytes of every file of the rule pack (LSYNC_PORT_PATCHES or the bundled one), named by
    their paths inside the pack, so where lsync-port or the pack is installed does not matter;
    and the bundled findings when the pack has none (ruleset.load uses those then)
  - the options that choose the rules (--profile, --rules)
  - the tree: tree.tree_digest (the bytes of every file apply or release detection may read, size
    and mtime of the others)
Anything different falls through to the full plan, whose own digest then decides.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentsync_mps import __version__
from latentsync_mps.pack.paths import FINDINGS_DIR, bundled_patches_dir
from latentsync_mps.port.manifest import Manifest, ManifestError, State
from latentsync_mps.port.outcome import Drift, Finding
from latentsync_mps.port.tree import FileProblem, check_tree, tree_digest

NOOP = "noop"  # the key of the record in the manifest's `result`
_PACKAGE = Path(__file__).resolve().parent.parent


# What the report shows of the rules, the profile and the release: their names. The full objects
# come from loading the rule pack, which is what this answer exists to avoid.
@dataclass(frozen=True)
class StoredRule:
    id: str
    kind: str


@dataclass(frozen=True)
class StoredProfile:
    name: str
    title: str


@dataclass(frozen=True)
class StoredRelease:
    name: str
    commit: str


@dataclass
class StoredPlan:
    """What report.render_plan and report.plan_to_json read of an unchanged planning.Plan."""

    tree: Path
    profile: StoredProfile
    release: StoredRelease | None
    rules: list[StoredRule]
    matches: Counter[str]
    drift: list[Drift]
    findings: list[Finding]
    residue: list[Finding]
    summary: dict
    unchanged: bool = True
    files: list = field(default_factory=list)
    restores: list = field(default_factory=list)
    changes: list = field(default_factory=list)
    writes: list = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def inputs_key(tree: Path, pack_root: Path, version: str, profile_name: str | None, rule_ids: list[str] | None) -> str:
    """One hash of what a plan of `tree` depends on (see the module's docstring)."""
    digest = hashlib.sha256(repr((version, profile_name, rule_ids)).encode())
    for label, root in _code_and_rules(pack_root):
        for rel in _files_below(root):
            digest.update(f"\n{label}/{rel}\0{_sha256(root / rel)}".encode())
    digest.update(f"\ntree\0{tree_digest(tree)}".encode())
    return digest.hexdigest()


def record(plan: Any, version: str) -> dict:
    """What the manifest keeps of a committed plan (planning.Plan) for the next re-apply."""
    residue = plan.residue
    return {
        "key": inputs_key(plan.tree, plan.pack_root, version, *plan.request),
        "profile": [plan.profile.name, plan.profile.title],
        "release": [plan.release.name, plan.release.commit] if plan.release else None,
        "rules": [[rule.id, rule.kind] for rule in plan.rules],
        "residue": [i for i, finding in enumerate(plan.findings) if finding in residue],
    }


def stored_plan(
    tree: Path, pack_root: Path, profile_name: str | None = None, rule_ids: list[str] | None = None
) -> StoredPlan | None:
    """The last apply's report when nothing it depended on changed since; None: plan in full
    (which also tells what is wrong with a bad tree, pack or manifest)."""
    if not tree.is_dir():
        return None
    tree = check_tree(tree)
    try:
        manifest = State(tree).read()
    except ManifestError:
        return None  # the full plan says what is wrong with it
    stored = _stored_record(manifest)
    if stored is None or stored["key"] != inputs_key(tree, pack_root, __version__, profile_name, rule_ids):
        return None
    result = manifest.result or {}
    findings = [Finding(**f) for f in result.get("findings", [])]
    return StoredPlan(
        tree=tree,
        profile=StoredProfile(*stored["profile"]),
        release=StoredRelease(*stored["release"]) if stored["release"] else None,
        rules=[StoredRule(*rule) for rule in stored["rules"]],
        matches=Counter(result.get("matches", {})),
        drift=[Drift(**d) for d in result.get("drift", [])],
        findings=findings,
        residue=[findings[i] for i in stored["residue"]],
        summary={"files": result.get("files", 0), "rewrites": result.get("rewrites", 0)},
        problems=[FileProblem(**p) for p in result.get("problems", [])],
    )


def _stored_record(manifest: Manifest | None) -> dict | None:
    if manifest is None or manifest.state != "applied" or manifest.tool_version != __version__:
        return None
    stored = (manifest.result or {}).get(NOOP)
    if not isinstance(stored, dict) or not {"key", "profile", "release", "rules", "residue"} <= stored.keys():
        return None
    return stored


def _code_and_rules(pack_root: Path) -> list[tuple[str, Path]]:
    roots = [("package", _PACKAGE), ("pack", pack_root)]
    if not (pack_root / FINDINGS_DIR).is_dir():
        roots.append(("findings", bundled_patches_dir() / FINDINGS_DIR))
    return roots


def _files_below(root: Path) -> list[str]:
    """Every file under `root` (relative POSIX paths, sorted), compiled bytecode left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        base = Path(folder).relative_to(root)
        found += [(base / name).as_posix() for name in sorted(files) if not name.endswith(".pyc")]
    return found


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        return f"unreadable: {error.errno}"
