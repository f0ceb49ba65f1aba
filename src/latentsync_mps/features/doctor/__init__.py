"""`lsync-port doctor`: a pre-flight check of the machine and the Python a port will run on.

    probe.py    standalone script run *in the target interpreter* (a child process, always):
                prints plain facts as JSON (platform, packages, torch/MPS/CUDA, ffmpeg, RAM, env)
    tree.py     facts about the tree, read from its files (status, requirements, config, checkpoints)
    catalog.py  what lsync-port knows: checkpoints per release (from the release facts in
                patches/upstreams.toml), wheels per platform, memory needs
    checks.py   one pure function per check: facts in, ok / warning / blocker with the fix out
                (the facts parsed once in facts.py; the checks in machine_, tree_ and memory_checks.py)

The CLI process never imports torch: the probe does, in the child.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsync_mps.features.doctor.checks import BLOCKER, OK, STATUSES, WARNING, Check, diagnose
from latentsync_mps.pack import release_facts
from latentsync_mps.port.errors import PortError

if TYPE_CHECKING:
    from latentsync_mps.features.doctor.tree import ExitCodeOf

__all__ = ["BLOCKER", "OK", "WARNING", "Check", "DoctorError", "Result", "diagnose", "gather", "render", "run"]

PROBE = Path(__file__).resolve().parent.parent.parent / "payload" / "probe.py"
PROBE_TIMEOUT_S = 300  # a cold import of torch + insightface on a slow disk can take a minute


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


def run_probe(python: str, helper: Path | None, timeout: float = PROBE_TIMEOUT_S) -> tuple[dict | None, str | None]:
    """Run probe.py in `python` (source on stdin, in an empty folder so nothing local shadows a
    package). Returns (facts, None) or (None, why it failed)."""
    command = [python, "-"] + (["--helper", str(helper)] if helper else [])
    with tempfile.TemporaryDirectory(prefix="lsync-port-doctor-") as cwd:
        try:
            done = subprocess.run(
                command,
                input=PROBE.read_text(encoding="utf-8"),
                capture_output=True,
                text=True,
                cwd=cwd,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None, f"the probe did not finish in {timeout:g} s"
        except OSError as error:
            return None, f"cannot run it: {error}"
    lines = done.stdout.strip().splitlines()
    try:
        facts = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        facts = None
    if done.returncode != 0 or not isinstance(facts, dict):
        tail = " ".join(done.stderr.strip().splitlines()[-3:])[-500:]
        return None, f"the probe exited with {done.returncode}" + (f": {tail}" if tail else "")
    return facts, None


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
    forecast: bool = False,
    stack: str | None = None,
    resolver=None,
    exit_code_of: ExitCodeOf | None = None,
) -> dict[str, Any]:
    """Every fact the checks read. `pack` (the rule packs) is needed when `tree` is given."""
    from latentsync_mps import __version__
    from latentsync_mps.features.doctor.tree import add_checkpoints, gather_tree, gather_vae
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
            from latentsync_mps.pack.ruleset import load

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
    facts["forecast"] = _forecast(tree_root, facts, pack, exe, live=forecast)
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


def _forecast(tree_root: Path | None, facts: dict[str, Any], pack, python: str, live: bool) -> dict[str, Any] | None:
    """The memory forecast the "memory" check compares with this machine. By default the one
    shipped for the tree's release (measured on the real release: a live forecast takes a minute
    or more); with --forecast, a live one of this very tree (its config, its resolution, its edits)."""
    from latentsync_mps.features.forecast import ForecastError, measured, run_forecast

    if live and tree_root is not None:
        try:
            report = run_forecast(tree_root, pack, python=python, resolution=facts["resolution"]["value"])
        except ForecastError as error:
            return {"source": "live", "error": str(error)}
        data = report.to_json() | {"source": "live"}
        if not report.ok:
            return {"source": "live", "error": report.reason}
        return data
    tree = facts.get("tree") or {}
    if tree:
        release = tree.get("release")
    else:  # a bare resolution stands for the release marked for it in upstreams.toml
        release = (release_facts.reference_releases().get(facts["resolution"]["value"]) or (None,))[0]
    try:
        shipped = measured(release)
    except ForecastError:
        return None
    return None if shipped is None else shipped | {"source": "shipped"}


def run(
    tree: Path | None,
    python: str | None = None,
    resolution: int | None = None,
    pack=None,
    forecast: bool = False,
    stack: str | None = None,
    resolver=None,
    exit_code_of: ExitCodeOf | None = None,
) -> Result:
    facts = gather(tree, python, resolution, pack, forecast, stack, resolver, exit_code_of)
    return Result(facts, diagnose(facts))


_STYLE = {OK: "green", WARNING: "yellow", BLOCKER: "bold red"}


def render(console, result: Result) -> None:
    """The table (status, check, detail, fix) and a summary line."""
    from rich.table import Table
    from rich.text import Text

    facts = result.facts
    probe = facts.get("probe") or {}
    version = (probe.get("python") or {}).get("version_text") if isinstance(probe.get("python"), dict) else None
    whose = "" if facts.get("python_given") else " (lsync-port's own; --python names another)"
    header = f"lsync-port doctor {facts.get('tool_version')} · python {facts.get('python')}"
    header += f" {version}" if version else ""
    header += whose
    tree = facts.get("tree")
    if tree:
        header += f" · tree {tree.get('path')}"
    console.print(Text(header, style="bold"))
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail, and the fix", overflow="fold")
    for check in result.checks:
        cell = Text(check.detail)
        if check.fix:
            cell.append("\nfix: ", style="bold")
            cell.append(check.fix)
        table.add_row(Text(check.status, style=_STYLE[check.status]), check.name, cell)
    console.print(table)
    counts = f"{result.count(OK)} ok, {result.count(WARNING)} warning(s), {result.blockers} blocker(s)"
    if result.blockers:
        from latentsync_mps.cli import Exit  # loaded already: doctor is run by the CLI

        code = Exit.DOCTOR_BLOCKER.value
        console.print(Text(f"{counts}: fix the blockers before a run (exit code {code}).", style="bold red"))
    else:
        console.print(
            Text(f"{counts}: nothing blocks a run.", style="green" if not result.count(WARNING) else "yellow")
        )
