"""Run the smoke-inference harness in a child process and turn its events into a report.

The child runs the tree's own code under the given interpreter, from the tree's root, in its own
process group, under a time limit. A hang, a crash or an out-of-memory kill is reported with the
check that was running, never as a traceback of ours.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.version import Version

from latentsync_mps import __version__
from latentsync_mps.host import mac_resolve
from latentsync_mps.host.child import CheckResult, run_child
from latentsync_mps.pack import stacks
from latentsync_mps.pack.release_facts import spec_facts
from latentsync_mps.pack.ruleset import RulePack
from latentsync_mps.pack.target_torch import TargetTorch, TargetTorchError, check_version, known_versions, write_table
from latentsync_mps.pack.target_torch import resolve as resolve_target
from latentsync_mps.payload.protocol import Spec
from latentsync_mps.port.detection import detect
from latentsync_mps.port.tree import check_tree
from latentsync_mps.port.tree import tree_digest as port_tree_digest

HARNESS = Path(__file__).resolve().parents[2] / "payload" / "verify" / "harness.py"
# The tree's modules on the inference path; all must import.
MODULES = [
    "latentsync.utils.util",
    "latentsync.utils.image_processor",
    "latentsync.models.unet",
    "latentsync.whisper.audio2feature",
    "latentsync.pipelines.lipsync_pipeline",
    "scripts.inference",
]
CHECK_TITLES = {
    "device": "device exists",
    "import": "modules import, helper resolves the device",
    "weights": "checkpoints",
    "decode": "video decoding (decord)",
    "audio": "audio features",
    "unet": "UNet forward",
    "pipeline": "denoising run, end to end",
    "output": "output sanity",
    "preview": "preview image",
    "parity": "parity with CPU float32",
    "config": "tree config",
    "node-adjust": "ComfyUI VideoLengthAdjuster.adjust",
    "node": "ComfyUI LatentSyncNode.inference",
}
CONFIG_CANDIDATES = (
    "configs/unet/stage2.yaml",
    "configs/unet/second_stage.yaml",
    "configs/unet/unet_latent_16_diffusion.yaml",
    "configs/unet/stage2_512.yaml",
)


def check_title(name: str) -> str:
    return CHECK_TITLES.get(name, name)


@dataclass
class VerifyReport:
    tree: str
    device: str
    python: str
    weights: str
    checks: list[CheckResult]
    passed: bool
    reason: str
    seconds: float
    log_tail: list[str] = field(default_factory=list)
    # --device mps-sim: the simulator's findings (grouped by call site when shown) and its counters.
    findings: list[dict] = field(default_factory=list)
    simulator: dict = field(default_factory=dict)
    # --device mps-sim: the torch whose MPS kernels the run was judged against, and where that came from.
    target_torch: dict = field(default_factory=dict)
    # The host stack modelled (stacks.toml): name, source, whether it is the tree's default, and what this
    # interpreter could not model of it.
    stack: dict = field(default_factory=dict)
    # The pre-check: the tree's requirements resolved for the stack's Mac (mac_resolve.Resolution).
    requirements: dict = field(default_factory=dict)

    # Written beside each other in the output folder: this report as JSON, and the contact sheet.
    report_file: str | None = None
    preview: str | None = None

    @property
    def errors(self) -> list[dict]:
        return [f for f in self.findings if f.get("level") == "error"]

    def to_json(self) -> dict:
        return asdict(self)


def is_node_package(tree: Path, profile: str) -> bool:
    init = tree / "__init__.py"
    return profile == "comfyui-latentsyncwrapper" or (
        init.is_file() and "NODE_CLASS_MAPPINGS" in init.read_text(errors="replace")
    )


def find_config(tree: Path) -> str | None:
    for candidate in CONFIG_CANDIDATES:
        if (tree / candidate).exists():
            return candidate
    return None


def run_verify(
    tree: Path,
    pack: RulePack,
    device: str = "auto",
    weights: str = "auto",
    steps: int = 2,
    frames: int | None = None,
    timeout: float = 600.0,
    python: str | None = None,
    min_psnr: float = 25.0,
    on_event: Callable[[dict], None] | None = None,
    target_torch: str | None = None,
    out_dir: Path | None = None,
    reuse_reference: bool = True,
    stack: str | None = None,
    resolver=None,
) -> VerifyReport:
    tree = check_tree(tree)
    profile, release = detect(tree, pack)
    out = Path(out_dir) if out_dir else default_out_dir(tree, device)
    (out / "preview.png").unlink(missing_ok=True)  # never show the picture of an earlier run
    simulate = device == "mps-sim"
    # Before the child starts: an unknown --stack, --target-torch (or pin) is a usage error, not a failed run.
    host, host_default = stacks.for_profile(profile.name, stack)
    target = stack_target_torch(host, tree, target_torch) if simulate else None
    # The pre-check: do the tree's requirements install on that Mac at all (wheels only)? Reported, and
    # the run goes on: it shows where the code itself would fail.
    resolved = (resolver or mac_resolve.resolve)(tree, host) if mac_resolve.enabled() else mac_resolve.disabled(host)
    config = find_config(tree)
    python = python or sys.executable
    if weights == "auto":
        weights = "real" if (tree / "checkpoints" / "latentsync_unet.pt").exists() else "synthetic"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lsync-verify-") as work_dir:
        work = Path(work_dir)
        events = work / "events.jsonl"
        spec = Spec(
            tree=str(tree),
            device="mps" if simulate else device,
            simulate="mps" if simulate else None,
            weights=weights,
            steps=steps,
            frames=frames or 8,
            seed=1247,
            config=config or CONFIG_CANDIDATES[0],
            modules=MODULES,
            runtime_module=profile.runtime_module,
            work=str(work),
            events=str(events),
            cache=str(_cache_dir()),
            min_psnr=min_psnr,
            # A ComfyUI node package: its nodes run too, as a workflow runs them.
            comfy=is_node_package(tree, profile.name),
            release=release.name if release else None,
            # What the release is like at run time (patches/upstreams.toml): the harness reads no lsync-port data.
            release_facts=spec_facts(pack, profile, release),
            preview=str(out / "preview.png"),
            # Parity off cpu: the output of an earlier cpu verify of the same tree and inputs is the
            # CPU float32 reference, when the harness finds one under the same key (reference.reference_key).
            reference={
                "reuse": reuse_reference,
                "folder": str(_cache_dir().with_name("verify-reference")),
                "tree_digest": tree_digest(tree),
                "tool_version": __version__,
            },
            stack=host.child_model(),
        )
        if target is not None:
            spec.mps_table = str(write_table(target, work / "mps-table.json"))
            spec.target_torch = target.to_json()
        child = run_child(HARNESS, spec, tree, python, timeout, on_event)
    results, timed_out, simulated = child.results, child.timed_out, child.simulated
    report = _report(
        tree, spec, python, results, timed_out, child.returncode, timeout, time.monotonic() - started, child.log_tail
    )
    report.stack = host.to_json(default=host_default)
    report.requirements = resolved.to_json()
    device_check = results.get("device")
    report.stack["not_modelled"] = device_check.data.get("stack_notes", []) if device_check else []
    if simulate:
        report.target_torch = target.to_json()
        _judge_findings(report, simulated)
    preview = out / "preview.png"
    drawn = results.get("preview") is not None and results["preview"].status == "pass"
    report.preview = str(preview) if drawn and preview.exists() else None
    report.report_file = str(out / "report.json")
    out.mkdir(parents=True, exist_ok=True)
    Path(report.report_file).write_text(json.dumps(report.to_json(), indent=2))
    return report


def stack_target_torch(host: stacks.Stack, tree: Path, override: str | None) -> TargetTorch:
    """mps-sim's target torch: --target-torch, else the stack's torch, else (tree-pins) the tree's own pin."""
    if override or host.torch_from_tree or not host.torch:
        return resolve_target(tree, override)
    origin = f"host stack {host.name}: torch {host.torch}"
    try:
        return TargetTorch(check_version(host.torch, origin), origin)
    except TargetTorchError:
        older = [v for v in known_versions() if Version(v) < Version(host.torch)]
        if not older:
            raise
        newest = max(older, key=Version)  # said in the report, as "no pin: newest known" is
        note = (
            f"no MPS table for torch {host.torch} yet (scripts/derive_mps_tables.py adds one from its macOS wheel): "
            f"judged against torch {newest}, the newest known release before it; --target-torch names another"
        )
        return TargetTorch(newest, origin, note)


SCRATCH_FOLDER = "temp/"


def tree_digest(tree: Path) -> str:
    """The reference key's tree (port's one tree digest) without temp/: LatentSync's pipeline writes
    its scratch files there (1.0, 1.5: temp/video.mp4, temp/audio.wav) and reads none it did not write."""
    return port_tree_digest(tree, leave_out=SCRATCH_FOLDER)


def default_out_dir(tree: Path, device: str) -> Path:
    """Outside the tree (verify writes nothing into it): one folder per tree and device."""
    import hashlib

    digest = hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / "lsync-port-verify" / f"{tree.name}-{digest}" / device


def _judge_findings(report: VerifyReport, simulated: dict) -> None:
    """--device mps-sim: any error-level finding fails verify, even when every check passed."""
    report.device = "mps-sim"
    report.findings = simulated.get("findings", [])
    report.simulator = simulated.get("stats", {})
    errors = report.errors
    if errors and report.passed:
        first = errors[0]
        report.passed = False
        where = f"{first['op']} at {first['site']}"
        what = first.get("summary") or first["message"]
        report.reason = f"MPS simulator: {len(errors)} error finding(s); first: {where}: {what}"


def _report(tree, spec, python, results, timed_out, returncode, timeout, seconds, log_tail) -> VerifyReport:
    checks = list(results.values())
    running = [c for c in checks if c.status == "running"]
    failed = [c for c in checks if c.status == "fail"]
    if timed_out:
        where = check_title(running[-1].name) if running else "start-up"
        reason = f"timed out after {timeout:g} s during: {where}"
    elif running:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        hint = " (SIGKILL: out of memory?)" if returncode == -signal.SIGKILL else ""
        reason = f"the child process died ({how}{hint}) during: {check_title(running[-1].name)}"
        running[-1].detail = reason
    elif failed:
        reason = f"{check_title(failed[0].name)}: {failed[0].detail}"
    elif returncode != 0:
        reason = f"the child process exited with code {returncode} before any check ran"
    elif not checks:
        reason = "no check ran"
    else:
        reason = ""
    for check in running:
        check.status = "fail"
    device = spec.device
    if results.get("device") and results["device"].status == "pass":
        device = results["device"].detail.rsplit(" on ", 1)[-1]
    passed = not reason and all(c.status in ("pass", "skip") for c in checks) and "output" in results
    return VerifyReport(str(tree), device, python, spec.weights, checks, passed, reason, round(seconds, 2), log_tail)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lsync-port" / "synthetic"
