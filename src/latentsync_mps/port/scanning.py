"""`scan`: the finders alone, over a tree as it is now."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from latentsync_mps.pack.rule import path_matches
from latentsync_mps.pack.ruleset import Profile, Release, RulePack
from latentsync_mps.port.detection import detect
from latentsync_mps.port.errors import NotUpstream
from latentsync_mps.port.manifest import ManifestError, State
from latentsync_mps.port.outcome import Drift, Finding
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transform import find
from latentsync_mps.port.tree import FileProblem, _language, _read_or_none, _short, check_tree, walk


@dataclass
class ScanResult:
    tree: Path
    profile: Profile | None
    findings: list[Finding]
    problems: list[FileProblem]
    release: Release | None = None
    drift: list[Drift] = field(default_factory=list)  # rules that would match nothing where expected
    # Files lsync-port's apply added (the runtime helper and its figures): its own code, neither
    # upstream's residue nor a warning, so not scanned; listed so that the report accounts for them.
    own: list[str] = field(default_factory=list)

    def in_scope(self, finding: Finding) -> bool:
        return self.profile is None or path_matches(finding.path, self.profile.inference_path)


def scan(tree: Path, pack: RulePack, profile_name: str | None = None) -> ScanResult:
    """The finders alone, over the tree as it is now. Changes nothing."""
    tree = check_tree(tree)
    try:
        profile, _ = detect(tree, pack, profile_name)
    except NotUpstream:
        profile = None  # any tree can be scanned; only the inference-path scope needs a profile
    result = ScanResult(tree, profile, [], [])
    detectors = pack.detectors()
    if profile is not None:
        # Drift is about the upstream code, so it is judged on a dry run (from the originals in a
        # ported tree); nothing is written.
        plan = make_plan(tree, pack, profile.name)
        result.release, result.drift = plan.release, plan.drift
    result.own = _added_by_apply(tree)
    for rel in walk(tree):
        if _language(rel) is None or rel in result.own:
            continue
        data = _read_or_none(tree / rel)
        if data is None:
            result.problems.append(FileProblem(rel, "cannot be read"))
            continue
        try:
            result.findings += find(rel, data, detectors)
        except (cst.ParserSyntaxError, UnicodeDecodeError) as error:
            result.problems.append(FileProblem(rel, f"cannot be parsed: {_short(error)}"))
        except RecursionError:
            result.problems.append(FileProblem(rel, "nested too deeply to scan (RecursionError)"))
    return result


def _added_by_apply(tree: Path) -> list[str]:
    """The files the manifest says apply created (no original): lsync-port's own."""
    try:
        manifest = State(tree).read()
    except ManifestError:
        return []  # scan still scans everything; apply and status name the broken manifest
    if manifest is None:
        return []
    return sorted(rel for rel, entry in manifest.files.items() if entry.original is None)
