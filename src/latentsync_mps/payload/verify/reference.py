"""Parity: the device's output against a CPU float32 run of the same inputs, the reference, which a
plain cpu verify keeps in a cache for later runs off cpu under a key of everything it depends on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")
inputs = protocol.load_sibling(HERE / "inputs.py")
pipeline = protocol.load_sibling(HERE / "pipeline.py")


def check_parity(spec, state):
    torch = state.torch
    cached = reference_cache(spec, state)
    if spec.device == "cpu":
        kept = ""
        if cached is not None and state.dtype == torch.float32 and not spec.simulate:
            if cached.store(state.output):  # a later verify off cpu compares with this run
                kept = "; its output is kept as the CPU float32 reference of a later verify off cpu"
        raise check_run.SkipCheck(f"cpu is the reference device{kept}")
    reuse = cached is not None and (spec.reference or {}).get("reuse") and cached.exists()
    reference, reused = (cached.path, True) if reuse else (None, False)
    if reference is None:
        reference = Path(spec.work) / "reference_cpu.mp4"
        run_reference(spec, state, reference)
        if cached is not None:
            cached.store(reference)
    ref_frames, _ = inputs.read_video_frames(reference)
    frames = state.output_frames
    reused_note = (
        f"; the CPU float32 reference was reused from an earlier verify of the same tree and inputs ({reference})"
        if reused
        else ""
    )
    if ref_frames.shape != frames.shape:
        raise check_run.CheckFailed(
            f"output shape {frames.shape} differs from the CPU float32 run's {ref_frames.shape}{reused_note}"
        )
    psnr, max_error = frame_error(frames, ref_frames)
    data = {
        "max_abs_error": max_error,
        "psnr": psnr,
        "reference": "reused" if reused else "computed",
        "reference_file": str(reference) if reused else None,
    }
    if psnr < spec.min_psnr:
        raise check_run.CheckFailed(
            f"differs from the CPU float32 run: PSNR {psnr:.1f} dB < {spec.min_psnr} dB, "
            f"max abs error {max_error:.0f}{reused_note}"
        )
    how = " (reference reused from an earlier verify of the same tree and inputs)" if reused else ""
    return f"vs CPU float32{how}: PSNR {psnr:.1f} dB, max abs error {max_error:.0f}/255", data


def frame_error(frames, reference) -> tuple[float, float]:
    """(PSNR in dB, largest absolute error) of uint8 frames against the reference's. The PSNR is of
    the mean of the squared differences, so an error that cancels out on average (a drift up in some
    pixels, down in others) or sits in a few pixels still counts in full."""
    import numpy as np

    diff = frames.astype(np.float32) - reference.astype(np.float32)
    mse = float((diff**2).mean())
    psnr = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return psnr, float(np.abs(diff).max())


def run_reference(spec, state, out_path: Path) -> None:
    """The CPU float32 run of the same inputs, computed as a plain cpu verify computes it: the UNet and
    the audio encoder loaded afresh in float32 on the CPU (the device's copies were rounded to its dtype)."""
    torch = state.torch
    state.unet = None  # the device's copy: its memory is needed for the float32 one
    simulator = state.simulator
    # Under the MPS simulator the reference run records no findings: only the mps run is judged.
    with simulator.paused() if simulator is not None else contextlib.nullcontext():
        state.unet = pipeline.load_unet(spec, state, "cpu", torch.float32)
        state.audio_encoder = pipeline.load_audio_encoder(spec, state, "cpu")
        pipeline.run_pipeline(spec, state, "cpu", torch.float32, out_path)


# What a CPU float32 run's output depends on beyond the tree, the inputs and the weights: the
# interpreter's packages on the inference path (any that is installed).
REFERENCE_PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "diffusers",
    "transformers",
    "accelerate",
    "huggingface-hub",
    "numpy",
    "scipy",
    "eva-decord",
    "decord",
    "opencv-python",
    "opencv-python-headless",
    "kornia",
    "imageio",
    "imageio-ffmpeg",
    "omegaconf",
    "einops",
    "librosa",
    "soundfile",
    "insightface",
    "onnxruntime",
    "mediapipe",
    "face-alignment",
    "pillow",
)


class ReferenceCache:
    """The CPU float32 reference of one tree and its inputs: a plain cpu verify's output video, kept so
    that a verify off cpu (mps-sim above all) need not run the pipeline a second time. The key covers
    everything that run's numbers depend on that verify can see (see `reference_key`)."""

    def __init__(self, folder: Path, key: str, inputs: dict):
        self.folder, self.key, self.inputs = folder, key, inputs
        self.path = folder / f"{key}.mp4"

    def exists(self) -> bool:
        return self.path.is_file() and (self.folder / f"{self.key}.json").is_file()

    def store(self, video: Path) -> bool:
        """Keep `video` as this key's reference; False when the cache cannot take it (full disk,
        read-only home): keeping is an optimisation, never a reason for verify to fail."""
        partial = self.folder / f"{self.key}.{os.getpid()}.partial"
        facts_partial = self.folder / f"{self.key}.json.{os.getpid()}.partial"
        facts = json.dumps({"key": self.key, "stored": time.time(), "inputs": self.inputs}, indent=1, default=str)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, partial)
            os.replace(partial, self.path)
            facts_partial.write_text(facts)
            os.replace(facts_partial, self.folder / f"{self.key}.json")
        except OSError:
            for leftover in (partial, facts_partial):
                with contextlib.suppress(OSError):  # the folder itself may be what failed
                    leftover.unlink()
            return False
        return True


def reference_cache(spec, state) -> ReferenceCache | None:
    """The reference's place in the cache (None when the runner gave none). A fresh reference
    (--fresh-reference) is kept there too, replacing the one it was not compared with."""
    given = spec.reference or {}
    if not given.get("folder"):
        return None
    inputs = reference_key(spec, state)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return ReferenceCache(Path(given["folder"]), key, inputs)


def reference_key(spec, state) -> dict:
    """Everything the CPU float32 run's output depends on that verify can see: the tree (its files'
    digest, from the runner), this harness's folder and lsync-port, the inputs verify makes (frames, size,
    steps, seed), the weights (their files' sizes and times), the interpreter and its packages, the
    torch thread count (it changes the order of float32 sums), the ffmpeg that encodes the video,
    and the LATENTSYNC_* settings the runtime helper reads."""
    from importlib import metadata

    torch = state.torch
    given = spec.reference or {}
    versions = {}
    for name in REFERENCE_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    weights = {}
    for name in ("unet", "whisper", "vae"):
        path = Path(state.weights[name])
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        weights[name] = [str(path), [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]]
    ffmpeg = shutil.which("ffmpeg")
    ffmpeg = os.path.realpath(ffmpeg) if ffmpeg else None  # not the per-run link _ffmpeg_on_path makes
    return {
        "tree_digest": given.get("tree_digest"),
        "tool_version": given.get("tool_version"),
        # Every file of verify's payload: an edit anywhere in it may change the reference run.
        "harness": [hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(HERE.glob("*.py"))],
        "inputs": [spec.frames, state.resolution, spec.steps, spec.seed, spec.config, spec.weights],
        "weights": weights,
        "python": [sys.executable, sys.version],
        "packages": versions,
        "threads": torch.get_num_threads(),
        "ffmpeg": [ffmpeg, os.stat(ffmpeg).st_size, os.stat(ffmpeg).st_mtime_ns] if ffmpeg else None,
        "environment": sorted(
            (k, v) for k, v in os.environ.items() if k.startswith("LATENTSYNC_") and k != "LATENTSYNC_DEVICE"
        ),
    }
