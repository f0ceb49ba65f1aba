"""`lsync-port forecast`: how much device memory one chunk of inference needs, at the release's real size.

The parent side: find the config the release's inference uses, gather the facts the tree does
not hold (patches/forecast.toml: VAE config, whisper dims), and run child.py in the tree's
interpreter through the host's child machinery (host.child.run_child). The child builds the real models
on the meta device and counts bytes; nothing heavy is computed, so it runs on 2 cores.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latentsync_mps.host.child import run_child
from latentsync_mps.pack.errors import TableError
from latentsync_mps.pack.forecast_tables import FACTS_FILE, forecast_facts
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.pack.release_facts import spec_facts
from latentsync_mps.pack.ruleset import RulePack
from latentsync_mps.payload.protocol import Spec
from latentsync_mps.port.detection import detect
from latentsync_mps.port.errors import BadInput, PackInvalid, PortError
from latentsync_mps.port.tree import check_tree

CHILD = Path(__file__).resolve().parent.parent.parent / "payload" / "forecast" / "child.py"
METAL_BUFFER_LIMIT = 2**32  # bytes one Metal buffer may hold
GIB = 2**30
# (device, dtype, chunking): chunking None is the CUDA path, which the port leaves unchunked.
CONFIGURATIONS = (
    ("cuda", "float16", None),
    ("mps", "float16", True),
    ("mps", "float16", False),
    ("mps", "float32", True),
    ("mps", "float32", False),
)
# The config LatentSync's inference.sh passes as --unet_config_path; when a tree has no
# inference.sh, the first of these that exists (newest layout first).
CONFIG_FALLBACKS = (
    "configs/unet/stage2_512.yaml",
    "configs/unet/stage2.yaml",
    "configs/unet/second_stage.yaml",
    "configs/unet/unet_latent_16_diffusion.yaml",
)
_CONFIG_FLAG = re.compile(r"--unet_config_path[\s=]+[\"']?([^\s\"']+)")


class ForecastError(PortError):
    """Forecast cannot start: one line for the user."""


class ForecastInputError(ForecastError, BadInput):
    """A tree without a UNet config, a chip the table does not know."""


class ForecastFactsInvalid(ForecastError, PackInvalid):
    """forecast.toml, or the forecast shipped for a release, cannot be read or does not fit."""


@dataclass
class Configuration:
    device: str
    dtype: str
    chunking: bool | None
    status: str  # pass | fail | skip
    peak_bytes: int | None = None
    largest_buffer_bytes: int | None = None
    largest_buffer_op: str = ""
    weights_bytes: int | None = None
    detail: str = ""
    phases: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)  # per phase: flops, bytes, attention_*, intensity bins

    @property
    def name(self) -> str:
        return configuration_name(self.device, self.dtype, self.chunking)

    @property
    def over_metal_limit(self) -> bool:
        return self.device == "mps" and (self.largest_buffer_bytes or 0) > METAL_BUFFER_LIMIT


@dataclass
class ForecastReport:
    tree: str
    release: str | None
    python: str
    torch: str | None
    config: str
    frames: int
    resolution: int | None
    steps: int
    ported: bool
    configurations: list[Configuration]
    seconds: float
    audio_features_shape: list[int] = field(default_factory=list)  # (guidance, frames, rows, width)
    reason: str = ""  # why the forecast failed, empty when it ran
    log_tail: list[str] = field(default_factory=list)
    # Seconds per chunk per Apple chip (estimate.py): a roofline over the counted work, plus the CPU parts.
    estimate: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reason

    def to_json(self) -> dict:
        data = asdict(self)
        for row, configuration in zip(data["configurations"], self.configurations, strict=True):
            row["name"] = configuration.name
            row["over_metal_limit"] = configuration.over_metal_limit
        return data


def configuration_name(device: str, dtype: str, chunking: bool | None) -> str:
    suffix = "" if chunking is None else ("-chunked" if chunking else "-unchunked")
    return f"{device}-{dtype}{suffix}"


def load_facts(root: Path | None = None) -> dict:
    try:
        return forecast_facts(root)
    except TableError as error:
        raise ForecastFactsInvalid(f"cannot read the forecast facts {error.path}: {error.reason}") from None


def inference_config(tree: Path) -> str:
    """The UNet config the release's own inference.sh uses, else the newest layout present."""
    script = tree / "inference.sh"
    if script.is_file():
        match = _CONFIG_FLAG.search(script.read_text(encoding="utf-8", errors="replace"))
        if match and (tree / match.group(1)).is_file():
            return match.group(1)
    for candidate in CONFIG_FALLBACKS:
        if (tree / candidate).is_file():
            return candidate
    raise ForecastInputError(
        f"{tree}: no UNet config found (looked for inference.sh's --unet_config_path, "
        f"then {', '.join(CONFIG_FALLBACKS)})"
    )


def run_forecast(
    tree: Path,
    pack: RulePack,
    python: str | None = None,
    frames: int = 16,
    steps: int = 2,
    resolution: int | None = None,
    timeout: float = 600.0,
    on_event=None,
    chip: str | None = None,
) -> ForecastReport:
    from latentsync_mps.pack.apple_chips import ChipError, find_chip, load_chips

    try:  # a chip the table does not know: said before anything runs
        chips = load_chips()
        chips = [find_chip(chip, chips)] if chip else chips
    except ChipError as error:
        raise ForecastInputError(str(error)) from None
    tree = check_tree(tree)
    profile, release = detect(tree, pack)
    config = inference_config(tree)
    facts = load_facts()
    known = spec_facts(pack, profile, release)
    if known and facts.get("vae", {}).get("name") != known["vae"]:
        # forecast.toml holds the hub config of one VAE; the release must load that one.
        raise ForecastFactsInvalid(
            f"{patches_dir() / FACTS_FILE}: [vae] is the config of {facts.get('vae', {}).get('name')!r}, but "
            f"LatentSync {known['release']} loads {known['vae']!r} (patches/upstreams.toml, [release.facts] vae)"
        )
    python = python or sys.executable
    spec = Spec(
        tree=str(tree),
        config=config,
        resolution=resolution,
        frames=frames,
        steps=steps,
        inference_steps=20,  # upstream's inference.sh default; only the first `steps` run
        guidance_scale=1.5,  # inference.sh's value: above 1, so classifier-free guidance doubles the batch
        runtime_module=profile.runtime_module,
        release_facts=known,
        vae=facts["vae"],
        stand_ins=facts.get("child", {}).get("stand_ins", []),
        whisper=facts["whisper"],  # the child picks the model by the config's cross_attention_dim
        configurations=[
            {"name": configuration_name(d, t, c), "device": d, "dtype": t, "chunking": c} for d, t, c in CONFIGURATIONS
        ],
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lsync-forecast-") as work_dir:
        spec.work = work_dir
        spec.events = str(Path(work_dir) / "events.jsonl")
        child = run_child(CHILD, spec, tree, python, timeout, on_event)
    seconds = round(time.monotonic() - started, 2)
    report = _report(spec, release.name if release else None, python, child, timeout, seconds)
    report.estimate = _estimate(report, chips)
    return report


def _estimate(report: ForecastReport, chips) -> dict:
    from latentsync_mps.pack.apple_chips import estimates
    from latentsync_mps.pack.forecast_tables import load_cpu_parts

    rows = [dict(asdict(row), name=row.name) for row in report.configurations if row.status == "pass"]
    return estimates(rows, chips, report.frames, load_cpu_parts())


def _report(spec, release, python, child, timeout, seconds) -> ForecastReport:
    results = child.results
    build = results.get("build")
    rows = []
    for entry in spec.configurations:
        result = results.get(entry["name"])
        row = Configuration(entry["device"], entry["dtype"], entry["chunking"], "fail")
        if result is not None:
            data = result.data
            row.status = "fail" if result.status == "running" else result.status
            row.detail = result.detail
            row.peak_bytes = data.get("peak_bytes")
            row.largest_buffer_bytes = data.get("largest_buffer_bytes")
            row.largest_buffer_op = data.get("largest_buffer_op", "")
            row.weights_bytes = data.get("weights_bytes")
            row.phases = data.get("phases", {})
            row.work = data.get("work", {})
        rows.append(row)
    reason = ""
    config_failure = results.get("config")
    running = [r for r in results.values() if r.status == "running"]
    if config_failure is not None:
        reason = config_failure.detail
    elif child.timed_out:
        reason = f"timed out after {timeout:g} s" + (f" during {running[-1].name}" if running else "")
    elif build is None:
        reason = f"the child process exited with code {child.returncode} before it started"
    elif build.status != "pass":
        reason = f"building the models failed: {build.detail}"
    elif running:
        reason = f"the child process died (exit code {child.returncode}) during {running[-1].name}"
    else:
        failed = [r for r in rows if r.status == "fail"]
        if failed:
            reason = f"{failed[0].name}: {failed[0].detail}"
    build_data = build.data if build is not None else {}
    return ForecastReport(
        tree=spec.tree,
        release=release,
        python=python,
        torch=build_data.get("torch"),
        config=spec.config,
        frames=spec.frames,
        resolution=_resolution(spec, results),
        steps=spec.steps,
        ported=bool(build_data.get("ported")),
        configurations=rows,
        seconds=seconds,
        audio_features_shape=build_data.get("audio_features_shape", []),
        reason=reason,
        log_tail=child.log_tail if reason else [],
    )


def _resolution(spec, results) -> int | None:
    if spec.resolution:
        return spec.resolution
    build = results.get("build")
    return build.data.get("resolution") if build is not None else None
