"""`lsync-port doctor`: a pre-flight check of the machine and the Python a port will run on.

    payload/probe.py  standalone script run *in the target interpreter* (a child process, always,
                started by host/probe.py): plain facts as JSON (platform, packages, torch/MPS/CUDA,
                ffmpeg, RAM, env)
    tree_facts.py  facts about the tree, read from its files (status, requirements, config, checkpoints)
    catalog.py  what lsync-port knows: checkpoints per release (from the release facts in
                patches/upstreams.toml), wheels per platform, memory needs
    checks.py   one pure function per check: facts in, ok / warning / blocker with the fix out
                (the facts parsed once in facts.py; the checks in machine_, tree_ and memory_checks.py)

The CLI process never imports torch: the probe does, in the child. The memory check reads the
forecast shipped for the release (pack/forecast_tables.py); with --forecast the CLI runs a live one
and hands it in (`LiveForecast`): doctor imports no other feature.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsync_mps.features.doctor.checks import diagnose
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, STATUSES, WARNING, Check
from latentsync_mps.host.probe import run_probe
from latentsync_mps.pack import release_facts
from latentsync_mps.port.errors import PortError

if TYPE_CHECKING:
    from latentsync_mps.features.doctor.tree_facts import ExitCodeOf

__all__ = ["BLOCKER", "OK", "WARNING", "Check", "DoctorError", "Result", "diagnose", "gather", "render", "run"]


# (tree root, resolution) -> a live forecast's JSON with "source": "live", or {"source": "live", "error": ...}
LiveForecast = Callable[[Path, int], dict[str, Any]]


class DoctorError(Exception):
    """A usage error (no such interpreter or folder): reported without a table."""


@dataclass
class Result:
    facts: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def blockers(self) -> int:
        return self.count(BLOCKER)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool_version": self.facts.get("tool_version"),
            "python": self.facts.get("python"),
            "tree": (self.facts.get("tree") or {}).get("path"),
            "summary": {status: self.count(status) for status in STATUSES},
            "checks": [c.to_json() for c in self.checks],
            "facts": self.facts,
        }


def resolve_python(python: str | None) -> tuple[str, bool]:
    """The interpreter to inspect, and whether the user named it."""
    if python is None:
        return sys.executable, False
    candidate = Path(python).expanduser()
    if candidate.exists() or os.sep in python:
        if not candidate.is_file():
            raise DoctorError(f"--python {python}: no such file")
        return str(candidate.absolute()), True  # the probe runs in another folder
    found = shutil.which(python)
    if found is None:
        raise DoctorError(f"--python {python}: not found on PATH")
    return found, True


def _resolution(option: int | None, tree: dict[str, Any] | None) -> dict[str, Any]:
    from latentsync_mps.features.doctor.catalog import DEFAULT_RESOLUTION

    if option is not None:
        return {"value": option, "source": "--resolution"}
    tree = tree or {}
    config = tree.get("config") or {}
    if config.get("resolution"):
        return {
            "value": config["resolution"],
            "source": f"data.resolution of {config['path']}, named by {config['source']}",
        }
    if tree.get("release") in DEFAULT_RESOLUTION:
        return {"value": DEFAULT_RESOLUTION[tree["release"]], "source": f"LatentSync {tree['release']}'s default"}
    return {"value": 512, "source": "assumed: LatentSync 1.6's 512x512; give TREE or --resolution"}


def gather(
    tree: Path | None,
    python: str | None = None,
    resolution: int | None = None,
    pack=None,
    forecast: LiveForecast | None = None,
    stack: str | None = None,
    resolver=None,
    exit_code_of: ExitCodeOf | None = None,
) -> dict[str, Any]:
    """Every fact the checks read. `pack` (the rule packs) is needed when `tree` is given."""
    from latentsync_mps import __version__
    from latentsync_mps.features.doctor.tree_facts import add_checkpoints, gather_tree, gather_vae
    from latentsync_mps.pack.paths import patches_dir
    from latentsync_mps.port.tree import check_tree

    exe, given = resolve_python(python)
    facts: dict[str, Any] = {"tool_version": __version__, "python": exe, "python_given": given}
    helper = Path(__file__).resolve().parent.parent.parent / "payload" / "runtime" / "_lsync_port.py"
    facts["helper_source"] = "package"
    tree_root = None
    if tree is not None:
        try:
            tree_root = check_tree(tree)
        except PortError as error:
            raise DoctorError(str(error)) from None
        if pack is None:
            from latentsync_mps.port.rulepack import load

            pack = load(patches_dir())
        facts["tree"] = gather_tree(tree_root, pack, exit_code_of=exit_code_of)
        # A patched tree's own helper answers which device it would pick; else lsync-port's.
        if facts["tree"].get("runtime_helper") and (facts["tree"].get("status") or {}).get("patched"):
            helper = tree_root / facts["tree"]["runtime_helper"]
            facts["helper_source"] = "tree"
    else:
        facts["tree"] = None
    probe, error = run_probe(exe, helper)
    facts["probe"] = probe or {}
    if error:
        facts["probe_error"] = error
    caches = (probe or {}).get("caches")
    if facts["tree"] is not None:
        add_checkpoints(facts["tree"], caches if isinstance(caches, dict) else None)
    tree_facts = facts["tree"] or {}
    facts["vae"] = gather_vae(caches, tree_facts.get("profile"), tree_facts.get("release")) if probe else None
    facts["stack"], facts["mac_resolve"] = _stack(tree_root, tree_facts.get("profile"), stack, resolver)
    facts["resolution"] = _resolution(resolution, facts["tree"])
    facts["forecast"] = _forecast(tree_root, facts, live=forecast)
    return facts


def _stack(tree_root: Path | None, profile: str | None, name: str | None, resolver) -> tuple[dict | None, dict | None]:
    """The host stack modelled (the tree's default, or --stack), and the tree's requirements resolved for it."""
    from latentsync_mps.host import mac_resolve
    from latentsync_mps.pack import stacks

    if tree_root is None or not profile:
        if name is None:
            return None, None
        try:
            return stacks.get(name).to_json(), None
        except stacks.StackError as error:
            raise DoctorError(str(error)) from None
    try:
        host, default = stacks.for_profile(profile, name)
    except stacks.StackError as error:
        raise DoctorError(str(error)) from None
    facts = host.to_json(default) | {"decord": stacks.decord_for(host.python)}
    if not mac_resolve.enabled():
        return facts, mac_resolve.disabled(host).to_json()
    return facts, (resolver or mac_resolve.resolve)(tree_root, host).to_json()


def _forecast(tree_root: Path | None, facts: dict[str, Any], live: LiveForecast | None) -> dict[str, Any] | None:
    """The memory forecast the "memory" check compares with this machine. By default the one
    shipped for the tree's release (measured on the real release: a live forecast takes a minute
    or more); with --forecast, a live one of this very tree (its config, its resolution, its edits),
    which the CLI runs (`live`: doctor does not run another feature)."""
    from latentsync_mps.pack.errors import TableError
    from latentsync_mps.pack.forecast_tables import measured

    if live is not None and tree_root is not None:
        return live(tree_root, facts["resolution"]["value"])
    tree = facts.get("tree") or {}
    if tree:
        release = tree.get("release")
    else:  # a bare resolution stands for the release marked for it in upstreams.toml
        release = (release_facts.reference_releases().get(facts["resolution"]["value"]) or (None,))[0]
    try:
        shipped = measured(release)
    except TableError:
        return None
    return None if shipped is None else shipped | {"source": "shipped"}


def run(
    tree: Path | None,
    python: str | None = None,
    resolution: int | None = None,
    pack=None,
    forecast: LiveForecast | None = None,
    stack: str | None = None,
    resolver=None,
    exit_code_of: ExitCodeOf | None = None,
) -> Result:
    facts = gather(tree, python, resolution, pack, forecast, stack, resolver, exit_code_of)
    return Result(facts, diagnose(facts))
