"""Seconds per 16-frame chunk on an Apple chip: a roofline over the forecast's counted work, plus the
CPU parts measured by scripts/bench.py.

The GPU part: each phase of the forecast's chunk (VAE encode, one denoising step, VAE decode, the
face paste) carries its FLOPs and bytes binned by arithmetic intensity (work.py); on a chip with
peak P FLOP/s and memory bandwidth B, a bin takes max(flops / P, bytes / B). A chunk is the encode,
`steps` denoising steps (upstream's inference.sh: 20), the decode and the paste. That is the time
of a GPU that runs every kernel at its peak: real kernels do not (see `LEAVES_OUT`).

The CPU part: what runs on a Mac's CPU per frame (face detection on ONNX Runtime's CPU provider,
the affine warp and restore, audio features, video decode and encode), measured on this project's
machine (patches/cpu-measured.json: the date and the machine with it) and multiplied by the frames.

Data: patches/apple-chips.toml (each figure with its source), read by pack/forecast_tables.py. It is
here, beside its table, because forecast and doctor both estimate from it; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentsync_mps.pack.errors import TableError
from latentsync_mps.pack.forecast_tables import CHIPS_FILE, chip_table

INFERENCE_STEPS = 20  # upstream's inference.sh default
LEAVES_OUT = (
    "kernels below peak: MPS kernels reach a fraction of the chip's peak FLOPs and bandwidth, so a real "
    "run is several times slower than this bound",
    "launch and dispatch overhead: thousands of small kernels per UNet step",
    "stalls: reads back to the host and CPU round trips (verify --device mps-sim counts them)",
    "the whisper audio encoder on the device, loading the models, and writing the output file",
    "caches: every op is taken to read its inputs and write its outputs from memory once (no fusion)",
    "thermal throttling and other work on the Mac",
)


class ChipError(ValueError):
    """A chip name the table does not know."""


@dataclass(frozen=True)
class Chip:
    name: str
    gpu_cores: int
    fp32_tflops: float
    bandwidth_gbs: float
    fp32_source: str
    bandwidth_source: str

    def flops_per_second(self, dtype: str) -> float:
        # Apple GPUs run float16 arithmetic at the float32 rate (apple-chips.toml): float16 saves bytes.
        return self.fp32_tflops * 1e12

    @property
    def bytes_per_second(self) -> float:
        return self.bandwidth_gbs * 1e9


def _source(sources: dict, key: str) -> str:
    base, _, note = key.partition(" ")
    text = sources.get(base, base)
    return f"{text} {note}".strip()


def load_chips(root: Path | None = None) -> list[Chip]:
    try:
        data = chip_table(root)
    except TableError as error:
        raise ChipError(f"cannot read the chip table {error.path}: {error.reason}") from None
    sources = data.get("sources", {})
    return [
        Chip(
            name=entry["name"],
            gpu_cores=entry["gpu_cores"],
            fp32_tflops=float(entry["fp32_tflops"]),
            bandwidth_gbs=float(entry["bandwidth_gbs"]),
            fp32_source=_source(sources, entry["fp32_source"]),
            bandwidth_source=_source(sources, entry["bandwidth_source"]),
        )
        for entry in data.get("chip", [])
    ]


def find_chip(name: str, chips: list[Chip]) -> Chip:
    """A chip by name, case and an "Apple " prefix aside ("m3 pro", "Apple M3 Pro")."""
    wanted = " ".join(name.lower().removeprefix("apple").split())
    for chip in chips:
        if chip.name.lower().removeprefix("apple").strip() == wanted:
            return chip
    known = ", ".join(chip.name.removeprefix("Apple ") for chip in chips)
    raise ChipError(f"unknown chip {name!r}: the table (patches/{CHIPS_FILE}) knows {known}")


def roofline_seconds(phase: dict, chip: Chip, dtype: str) -> float:
    """A phase's time on a chip: per intensity bin, the larger of its compute and its memory time."""
    flops_rate, byte_rate = chip.flops_per_second(dtype), chip.bytes_per_second
    return sum(max(flops / flops_rate, moved / byte_rate) for flops, moved in phase.get("bins", {}).values())


def denoise_step(work: dict) -> dict | None:
    """The last denoising step the forecast ran: from step 2 on, every step is the same work."""
    steps = sorted((name for name in work if name.startswith("denoise step")), key=lambda n: int(n.split()[-1]))
    return work[steps[-1]] if steps else None


def gpu_seconds(work: dict, chip: Chip, dtype: str, steps: int = INFERENCE_STEPS) -> dict:
    """Seconds of one chunk's GPU work on `chip`, by part, and the total."""
    step = denoise_step(work)
    parts = {
        "vae encode": roofline_seconds(work.get("vae encode", {}), chip, dtype),
        "unet per step": roofline_seconds(step, chip, dtype) if step else 0.0,
        "vae decode": roofline_seconds(work.get("vae decode", {}), chip, dtype),
        "face paste": roofline_seconds(work.get("face paste", {}), chip, dtype),
    }
    total = parts["vae encode"] + steps * parts["unet per step"] + parts["vae decode"] + parts["face paste"]
    return {"parts": {k: round(v, 4) for k, v in parts.items()}, "seconds": round(total, 3)}


def cpu_seconds(frames: int, cpu: dict | None) -> dict:
    if not cpu:
        return {"parts": {}, "seconds": 0.0}
    parts = {
        name: part["per_frame_s"] * frames for name, part in cpu.get("parts", {}).items() if part.get("counted", True)
    }
    return {"parts": {k: round(v, 4) for k, v in parts.items()}, "seconds": round(sum(parts.values()), 3)}


def chunk_estimate(
    work: dict, chip: Chip, dtype: str, frames: int, cpu: dict | None, steps: int = INFERENCE_STEPS
) -> dict:
    gpu = gpu_seconds(work, chip, dtype, steps)
    host = cpu_seconds(frames, cpu)
    return {
        "chip": chip.name,
        "seconds": round(gpu["seconds"] + host["seconds"], 2),
        "gpu_seconds": gpu["seconds"],
        "gpu_parts": gpu["parts"],
        "cpu_seconds": host["seconds"],
        "cpu_parts": host["parts"],
    }


def work_totals(work: dict, steps: int = INFERENCE_STEPS) -> dict:
    """FLOPs and bytes of one chunk by part (the UNet's per step), as forecast --json shows them."""
    step = denoise_step(work) or {}

    def pick(phase: dict) -> dict:
        keys = ("flops", "bytes", "attention_flops", "attention_bytes")
        return {key: phase.get(key, 0) for key in keys}

    parts = {
        "vae encode": pick(work.get("vae encode", {})),
        "unet per step": pick(step),
        "vae decode": pick(work.get("vae decode", {})),
        "face paste": pick(work.get("face paste", {})),
    }
    chunk = {
        key: parts["vae encode"][key]
        + steps * parts["unet per step"][key]
        + parts["vae decode"][key]
        + parts["face paste"][key]
        for key in ("flops", "bytes", "attention_flops", "attention_bytes")
    }
    return {"parts": parts, "chunk": chunk, "steps": steps}


def estimates(configurations: list[dict], chips: list[Chip], frames: int, cpu: dict | None) -> dict:
    """Per mps configuration (rows of a forecast, live or shipped, with their "work"), per chip."""
    rows = {}
    for row in configurations:
        work = row.get("work")
        if row.get("device") != "mps" or not work:
            continue
        name = row.get("name") or f"mps-{row['dtype']}-{'chunked' if row.get('chunking') else 'unchunked'}"
        rows[name] = {
            "work": work_totals(work),
            "chips": [chunk_estimate(work, chip, row["dtype"], frames, cpu) for chip in chips],
        }
    return {
        "inference_steps": INFERENCE_STEPS,
        "frames": frames,
        "kind": "roofline estimate (a bound: every kernel at the chip's peak), plus measured CPU parts",
        "leaves_out": list(LEAVES_OUT),
        "cpu_measured": {k: v for k, v in (cpu or {}).items() if k != "parts"} or None,
        "configurations": rows,
    }
