"""Device policy for a LatentSync tree ported by lsync-port.

Written into the tree by `lsync-port apply` and removed by `lsync-port revert`; rewritten code
calls it instead of naming "cuda". The device is chosen when the code runs, not when it is
ported, so one ported tree runs on Apple Silicon (mps), NVIDIA (cuda) and plain CPUs alike.

Environment:
  LATENTSYNC_DEVICE  mps | cuda | cuda:N | cpu    overrides the automatic choice (mps > cuda > cpu)
  LATENTSYNC_DTYPE   float16 | bfloat16 | float32  overrides the dtype policy
"""

from __future__ import annotations

import os

DEVICE_ENV = "LATENTSYNC_DEVICE"
DTYPE_ENV = "LATENTSYNC_DTYPE"

_DTYPE_NAMES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def _torch():
    import torch  # imported late: the helper is cheap to import and torch is the tree's own dependency

    return torch


def _mps_available() -> bool:
    torch = _torch()
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device(preferred: str | None = None) -> str:
    """The device to run on: $LATENTSYNC_DEVICE, else mps, else cuda (or `preferred` "cuda:N"), else cpu."""
    chosen = os.environ.get(DEVICE_ENV, "").strip().lower()
    if chosen and chosen != "auto":
        return chosen
    if _mps_available():
        return "mps"
    if _torch().cuda.is_available():
        return preferred if preferred and preferred.startswith("cuda") else "cuda"
    return "cpu"


def device_type(dev: str | None = None) -> str:
    """ "mps", "cuda" or "cpu" for a device string (default: `device()`)."""
    return str(dev or device()).split(":", 1)[0]


def is_available() -> bool:
    """True when an accelerator (mps or cuda) will be used: the neutral `torch.cuda.is_available()`."""
    return device_type() != "cpu"


def dtype(dev: str | None = None):
    """The compute dtype: $LATENTSYNC_DTYPE, else float16 on mps and on CUDA GPUs of compute
    capability 8 or more (upstream's own gate), else float32."""
    torch = _torch()
    name = os.environ.get(DTYPE_ENV, "").strip().lower()
    if name:
        if name not in _DTYPE_NAMES:
            raise ValueError(f"{DTYPE_ENV}={name!r} is not one of {', '.join(sorted(set(_DTYPE_NAMES.values())))}")
        return getattr(torch, _DTYPE_NAMES[name])
    kind = device_type(dev)
    if kind == "mps":
        return torch.float16
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7:
        return torch.float16
    return torch.float32


def fp16_supported(dev: str | None = None) -> bool:
    """The neutral form of upstream's `torch.cuda.is_available() and capability > 7` gate."""
    return dtype(dev) == _torch().float16


def empty_cache() -> None:
    """Release cached allocator memory on whichever backend is in use (nothing on cpu)."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "mps" and _mps_available():
        torch.mps.empty_cache()


def synchronize() -> None:
    """Wait for queued kernels on the backend in use (nothing on cpu)."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()
    elif kind == "mps" and _mps_available():
        torch.mps.synchronize()


def device_count() -> int:
    """Accelerators of the backend in use: CUDA's count, 1 on mps, 0 on cpu."""
    torch, kind = _torch(), device_type()
    if kind == "cuda":
        return torch.cuda.device_count()
    return 1 if kind == "mps" and _mps_available() else 0


def set_device(index) -> None:
    """The neutral `torch.cuda.set_device`: MPS and CPU have a single device, so nothing to do."""
    torch = _torch()
    if device_type() == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(index)


def current_device() -> int:
    """The neutral `torch.cuda.current_device()` (ComfyUI wrapper issue 110: torch.mps has none)."""
    torch = _torch()
    if device_type() == "cuda" and torch.cuda.is_available():
        return torch.cuda.current_device()
    return 0


def manual_seed(seed: int) -> None:
    """Seed the generator of the backend in use (torch.manual_seed also seeds cpu)."""
    torch, kind = _torch(), device_type()
    torch.manual_seed(seed)
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.manual_seed(seed)
    elif kind == "mps" and _mps_available():
        torch.mps.manual_seed(seed)


def autocast(enabled: bool = True, dtype=None, cache_enabled: bool = True):
    """The neutral `torch.cuda.amp.autocast(...)`: autocast on the device in use; off on cpu."""
    torch, kind = _torch(), device_type()
    return torch.autocast(
        device_type=kind,
        dtype=dtype or torch.float16,
        enabled=enabled and kind != "cpu",
        cache_enabled=cache_enabled,
    )


def set_memory_fraction(fraction: float, index: int = 0) -> None:
    """The neutral `torch.cuda.set_per_process_memory_fraction`."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    elif kind == "mps" and _mps_available():
        torch.mps.set_per_process_memory_fraction(fraction)


def total_memory() -> int:
    """Bytes the device may use: CUDA's total memory, MPS's recommended maximum, 0 on cpu."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    if kind == "mps" and _mps_available():
        return int(torch.mps.recommended_max_memory())
    return 0


def onnx_providers(dev: str | None = None) -> list[str]:
    """ONNX Runtime providers for the device, best first, limited to those this install has."""
    kind = device_type(dev)
    wanted = {
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "mps": ["CoreMLExecutionProvider", "CPUExecutionProvider"],
    }.get(kind, ["CPUExecutionProvider"])
    try:
        import onnxruntime
    except ImportError:
        return wanted
    available = set(onnxruntime.get_available_providers())
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def onnx_ctx_id(dev: str | None = None) -> int:
    """InsightFace's ctx_id: the CUDA index on cuda, 0 on mps (keeps the CoreML provider), -1 on cpu."""
    dev = dev or device()
    kind = device_type(dev)
    if kind == "cuda":
        return int(dev.split(":", 1)[1]) if ":" in dev else 0
    return 0 if kind == "mps" else -1
