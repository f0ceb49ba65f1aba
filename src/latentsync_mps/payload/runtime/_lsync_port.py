"""Device policy for a LatentSync tree ported by lsync-port.

Written into the tree by `lsync-port apply` and removed by `lsync-port revert`; rewritten code
calls it instead of naming "cuda". Everything is decided when the code runs, never when a module
is imported, so one ported tree runs on Apple Silicon (mps), NVIDIA (cuda) and plain CPUs alike,
and environment variables set late (by ComfyUI, a notebook) still count.

Environment:
  LATENTSYNC_DEVICE  auto | mps | cuda | cuda:N | cpu  overrides the automatic choice (mps > cuda > cpu)
  LATENTSYNC_DTYPE   float16 | bfloat16 | float32      overrides the dtype policy (see `dtype`)
  LATENTSYNC_MPS_CHUNKING  1 (default) | 0 | force  attention and VAE in chunks on mps; 0 turns it
                                                   off, force chunks on every device (for tests)
  LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES  bytes one chunk may use (default 1 GiB; Metal's limit
                                        for one buffer is 2**32 bytes)

The first decision prints one line to stderr saying what was chosen and why.
"""

from __future__ import annotations

import functools
import os
import sys

DEVICE_ENV = "LATENTSYNC_DEVICE"
DTYPE_ENV = "LATENTSYNC_DTYPE"
CHUNKING_ENV = "LATENTSYNC_MPS_CHUNKING"
CHUNK_BYTES_ENV = "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES"
FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"
DEFAULT_CHUNK_BYTES = 1 << 30  # well under Metal's 2**32-byte limit for one buffer
# The dtype policy on mps: float32 where the release's forecast peak in float32 fits the Mac's
# recommended working set (torch.mps.recommended_max_memory()), else float16. `lsync-port apply`
# writes the release's shipped forecast beside this file (MEMORY_FIGURES). Without it (a release
# not measured, such as 1.0) the need is taken as twice upstream's published float16 minimum of
# 18 GB of VRAM (1.6 and main at 512 px), as float32 needs about twice float16's memory.
MEMORY_FIGURES = "_lsync_port_memory.json"
FLOAT32_MIN_WORKING_SET = 36 * 2**30

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
VALID_DEVICES = "auto, mps, cuda, cuda:N, cpu"
VALID_DTYPES = "float16, bfloat16, float32"


class ConfigError(ValueError):
    """A LATENTSYNC_* variable holds a value the port does not know. Left uncaught, it ends the
    program with its one-line message and no traceback (see `_excepthook`)."""


def _excepthook(kind, value, traceback, previous=None):
    if isinstance(value, ConfigError):
        print(f"error: {value}", file=sys.stderr)
        return
    (previous or sys.__excepthook__)(kind, value, traceback)


if not getattr(sys.excepthook, "lsync_port", False):  # once per process, even if imported twice
    _hook = functools.partial(_excepthook, previous=sys.excepthook)
    _hook.lsync_port = True  # type: ignore[attr-defined]
    sys.excepthook = _hook


def _torch():
    import torch  # imported late: the helper is cheap to import and torch is the tree's own dependency

    return torch


def _mps_available() -> bool:
    torch = _torch()
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _device_setting() -> str | None:
    """$LATENTSYNC_DEVICE, checked; None when unset or "auto"."""
    raw = os.environ.get(DEVICE_ENV, "").strip().lower()
    if not raw or raw == "auto":
        return None
    kind, colon, index = raw.partition(":")
    # "meta": `lsync-port forecast`'s shape-only run (not offered to users, so not in the message).
    if (kind in ("mps", "cpu", "meta") and not colon) or (kind == "cuda" and (not colon or index.isdigit())):
        return raw
    raise ConfigError(f"{DEVICE_ENV}={raw!r} is not a device: use one of {VALID_DEVICES} (or leave it unset)")


def _dtype_setting() -> str | None:
    """$LATENTSYNC_DTYPE as a torch dtype name, checked; None when unset."""
    raw = os.environ.get(DTYPE_ENV, "").strip().lower()
    if not raw:
        return None
    if raw not in _DTYPE_NAMES:
        raise ConfigError(f"{DTYPE_ENV}={raw!r} is not a dtype: use one of {VALID_DTYPES} (or leave it unset)")
    return _DTYPE_NAMES[raw]


def _choose_device(preferred: str | None = None) -> tuple[str, str]:
    """(device, why)."""
    chosen = _device_setting()
    if chosen:
        return chosen, f"{DEVICE_ENV}={chosen}"
    if _mps_available():
        return "mps", "auto: Apple GPU"
    if _torch().cuda.is_available():
        return (preferred if preferred and preferred.startswith("cuda") else "cuda"), "auto: NVIDIA GPU"
    return "cpu", "auto: no GPU"


def _choose_dtype(dev: str | None = None) -> tuple[object, str]:
    """(dtype, why): $LATENTSYNC_DTYPE; else on mps float32 where the recommended working set
    holds float32's need (`float32_need`: the release's forecast), else float16; on CUDA upstream's own gate (float16 on
    compute capability 8 or more); float32 elsewhere."""
    torch = _torch()
    name = _dtype_setting()
    if name:
        return getattr(torch, name), f"{DTYPE_ENV}={name}"
    kind = device_type(dev)
    if kind == "mps":
        working_set = total_memory("mps")
        need, basis = float32_need()
        figures = f"float32 needs {_gib(need)} ({basis})"
        if working_set >= need:
            return torch.float32, f"mps: {figures}, within the recommended working set of {_gib(working_set)}"
        return torch.float16, f"mps: {figures}, over the recommended working set of {_gib(working_set)}"
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7:
        return torch.float16, "CUDA compute capability 8+ (upstream's gate)"
    return torch.float32, f"{kind}"


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def memory_figures() -> dict | None:
    """The forecast figures apply wrote beside this file ({"release", "resolution", "frames",
    "mps": [{"dtype", "chunking", "peak_bytes"}]}), or None when there are none."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(__file__).with_name(MEMORY_FIGURES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def float32_need() -> tuple[int, str]:
    """(bytes, where the figure comes from): the release's forecast peak in float32 on mps, with
    chunking as $LATENTSYNC_MPS_CHUNKING sets it; else FLOAT32_MIN_WORKING_SET."""
    figures = memory_figures() or {}
    chunked = os.environ.get(CHUNKING_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    for row in figures.get("mps") or []:
        if row.get("dtype") == "float32" and row.get("chunking") is chunked and row.get("peak_bytes"):
            size = f"{figures.get('resolution')} px, {figures.get('frames')} frames"
            chunking = "chunking on" if chunked else "chunking off"
            return int(row["peak_bytes"]), f"forecast peak of LatentSync {figures.get('release')} at {size}, {chunking}"
    return FLOAT32_MIN_WORKING_SET, "no forecast for this tree: twice upstream's published 18 GB float16 minimum"


# Kept on `sys`, not here: the ComfyUI wrapper imports this file as two modules (relatively from
# nodes.py, absolutely from the vendored tree), and the line is printed once per process.
_ANNOUNCED_FLAG = "_lsync_port_announced"


def announce() -> None:
    """Print once per process, to stderr, what the port chose and why: device, dtype, chunking and
    the MPS fallback variable. Called by the first `device()` or `dtype()`."""
    if getattr(sys, _ANNOUNCED_FLAG, False):
        return
    setattr(sys, _ANNOUNCED_FLAG, True)
    dev, dev_why = _choose_device()
    kind = device_type(dev)
    dtype_value, dtype_why = _choose_dtype(dev)
    mode = os.environ.get(CHUNKING_ENV, "1").strip().lower() or "1"
    if mode in ("0", "false", "no", "off"):
        chunks = f"off ({CHUNKING_ENV}={mode})"
    elif mode == "force" or kind == "mps":
        chunks = f"on, {chunk_bytes() / 2**20:.0f} MiB pieces"
    else:
        chunks = f"off (only on mps; {CHUNKING_ENV}=force forces it)"
    fallback = os.environ.get(FALLBACK_ENV)
    fallback_text = f"{FALLBACK_ENV}={fallback}" if fallback is not None else f"{FALLBACK_ENV} unset"
    print(
        f"lsync-port: device {dev} ({dev_why}); dtype {str(dtype_value).replace('torch.', '')} ({dtype_why}); "
        f"attention/VAE chunking {chunks}; {fallback_text}",
        file=sys.stderr,
    )


def device(preferred: str | None = None) -> str:
    """The device to run on: $LATENTSYNC_DEVICE, else mps, else cuda (or `preferred` "cuda:N"), else cpu."""
    announce()
    return _choose_device(preferred)[0]


def device_type(dev: str | None = None) -> str:
    """ "mps", "cuda" or "cpu" for a device string or torch.device (default: the chosen device)."""
    return str(dev or _choose_device()[0]).split(":", 1)[0]


def is_available() -> bool:
    """True when an accelerator (mps or cuda) will be used: the neutral `torch.cuda.is_available()`."""
    return device_type() != "cpu"


def dtype(dev: str | None = None):
    """The compute dtype (see `_choose_dtype`): $LATENTSYNC_DTYPE wins everywhere."""
    announce()
    return _choose_dtype(dev)[0]


def fp16_supported(dev: str | None = None) -> bool:
    """The neutral form of upstream's `torch.cuda.is_available() and capability > 7` gate."""
    return dtype(dev) == _torch().float16


def face_device(pipeline_device) -> str:
    """The device for face detection and the face warp: the pipeline's own execution device (a
    pipeline moved to the cpu keeps its face work there), as a string ("mps", "cuda:1", "cpu")."""
    dev = _torch().device(pipeline_device)
    return dev.type if dev.type in ("mps", "cpu") else str(dev)


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
    """The neutral `torch.cuda.set_per_process_memory_fraction`. On mps the fraction is of the
    recommended working set (PyTorch's own default is 1.7); a PYTORCH_MPS_HIGH_WATERMARK_RATIO the
    user set wins over the code's choice."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    elif kind == "mps" and _mps_available() and not os.environ.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO"):
        torch.mps.set_per_process_memory_fraction(fraction)


def total_memory(kind: str | None = None) -> int:
    """Bytes the device may use: CUDA's total memory, MPS's recommended maximum, 0 on cpu."""
    torch, kind = _torch(), kind or device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    if kind == "mps" and _mps_available():
        return _mps_working_set()
    return 0


def _mps_working_set() -> int:
    """torch.mps.recommended_max_memory(), which torch has from 2.5 only (1.0 pins 2.1.2, 1.5 pins 2.4.1:
    there it is an AttributeError). Without it, two thirds of physical memory: Metal's recommended
    working set is about that on smaller Apple Silicon Macs and about three quarters on larger ones,
    so the smaller figure is the safe guess."""
    recommended = getattr(_torch().mps, "recommended_max_memory", None)
    if recommended is not None:
        return int(recommended())
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 2 // 3)
    except (ValueError, OSError, AttributeError):
        return 0  # unknown, as on cpu


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


def device_properties(index: int = 0):
    """The neutral `torch.cuda.get_device_properties(index)`: CUDA's own on cuda; elsewhere an
    object with `name` and `total_memory` (MPS's recommended maximum, 0 on cpu)."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(index)
    from types import SimpleNamespace

    return SimpleNamespace(name=kind, total_memory=total_memory())


def restore_dtype(dev: str | None = None):
    """The dtype of the face warp/erode/blur (AlignRestore): float16 on CUDA as upstream, float32
    on mps and cpu, where half-precision kornia image ops are slow or imprecise."""
    torch = _torch()
    return torch.float16 if device_type(dev) == "cuda" else torch.float32


def whisper_fp16(dev=None) -> bool:
    """Whether the whisper audio encoder runs in float16: on CUDA, as upstream; float32 elsewhere
    (upstream only fell back to float32 on the CPU, so mps ran it in float16)."""
    return device_type(None if dev is None else str(dev)) == "cuda"


def xformers_available() -> bool:
    """Upstream's `is_xformers_available()` switch, limited to CUDA: xformers has no Mac wheels and
    its memory-efficient attention runs on NVIDIA GPUs only."""
    if device_type() != "cuda":
        return False
    try:
        from diffusers.utils.import_utils import is_xformers_available
    except ImportError:
        return False
    return bool(is_xformers_available())


def sdpa_kernel(*args, **kwargs):
    """`torch.nn.attention.sdpa_kernel(...)` on CUDA; elsewhere no pin at all. A pin to
    FLASH_ATTENTION fails on mps and cpu with 'No available kernel'."""
    import contextlib

    if device_type() == "cuda":
        from torch.nn.attention import sdpa_kernel as pin

        return pin(*args, **kwargs)
    return contextlib.nullcontext()


def runs_face_detection(dev=None) -> bool:
    """Upstream builds no face detector when the device is "cpu" and then fails on the first frame
    (NotImplementedError, or 'NoneType' has no attribute 'process'). The ported tree builds it on
    every device: InsightFace on the CPU provider (ctx_id -1), face_alignment with device="cpu"."""
    return True


# ---------------------------------------------------------------------------------------------
# Memory on MPS: one Metal buffer may not exceed 2**32 bytes, and SDPA on MPS materialises the
# whole score matrix. Attention and the VAE are computed in pieces there; elsewhere untouched.


def chunk_bytes() -> int:
    """The byte budget of one chunk: $LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES, else 1 GiB."""
    value = os.environ.get(CHUNK_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_CHUNK_BYTES
    try:
        budget = int(value)
    except ValueError:
        raise ValueError(f"{CHUNK_BYTES_ENV}={value!r} is not a number of bytes") from None
    if budget <= 0:
        raise ValueError(f"{CHUNK_BYTES_ENV} must be positive, got {budget}")
    return budget


def chunking_enabled(tensor=None) -> bool:
    """Chunk on mps (the tensor's device, else `device_type()`), unless $LATENTSYNC_MPS_CHUNKING=0;
    `force` chunks on every device."""
    mode = os.environ.get(CHUNKING_ENV, "1").strip().lower()
    if mode in ("0", "false", "no", "off"):
        return False
    if mode == "force":
        return True
    kind = tensor.device.type if tensor is not None else device_type()
    return kind == "mps"


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
    """`F.scaled_dot_product_attention`, in chunks of query rows on mps so that no score matrix
    exceeds `chunk_bytes()`. Anywhere else it is the plain call."""
    if chunking_enabled(query):
        return chunked_scaled_dot_product_attention(
            query, key, value, attn_mask, dropout_p, is_causal, budget=chunk_bytes(), **kwargs
        )
    functional = _torch().nn.functional
    return functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs
    )


def chunked_scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, budget=DEFAULT_CHUNK_BYTES, **kwargs
):
    """SDPA whose score matrix (leading dims x query rows x key length) stays under `budget`
    bytes per piece: first the leading (batch) dimension is split, then the query rows. Rows of
    attention are independent, so the result equals the unchunked one."""
    torch = _torch()
    functional = torch.nn.functional
    q_len, k_len = query.shape[-2], key.shape[-2]
    lead = 1
    for size in query.shape[:-2]:
        lead *= size
    element = max(query.element_size(), 4)  # the MPS math kernel keeps scores in float32
    row_bytes = k_len * element  # one query row of one batch element
    if lead * q_len * row_bytes <= budget or query.dim() < 2:
        return functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs
        )
    if query.dim() > 2 and query.shape[0] > 1 and (lead // query.shape[0]) * q_len * row_bytes <= budget:
        # Whole batch elements fit: split the first dimension only.
        per_item = (lead // query.shape[0]) * q_len * row_bytes
        step = max(1, budget // per_item)
        pieces = []
        for start in range(0, query.shape[0], step):
            part = slice(start, start + step)
            pieces.append(
                chunked_scaled_dot_product_attention(
                    query[part],
                    _batch_slice(key, query, part),
                    _batch_slice(value, query, part),
                    _batch_slice(attn_mask, query, part),
                    dropout_p,
                    is_causal,
                    budget,
                    **kwargs,
                )
            )
        return torch.cat(pieces, dim=0)
    if query.dim() > 2 and query.shape[0] > 1:
        # Not even one batch element fits: one element at a time, each split by rows.
        return torch.cat(
            [
                chunked_scaled_dot_product_attention(
                    query[i : i + 1],
                    _batch_slice(key, query, slice(i, i + 1)),
                    _batch_slice(value, query, slice(i, i + 1)),
                    _batch_slice(attn_mask, query, slice(i, i + 1)),
                    dropout_p,
                    is_causal,
                    budget,
                    **kwargs,
                )
                for i in range(query.shape[0])
            ],
            dim=0,
        )
    rows = max(1, budget // (lead * row_bytes))
    pieces = []
    for start in range(0, q_len, rows):
        stop = min(q_len, start + rows)
        mask = attn_mask
        if mask is not None and mask.dim() >= 2 and mask.shape[-2] == q_len:
            mask = mask[..., start:stop, :]
        if is_causal:
            # PyTorch's causal mask is top-left aligned: row r sees keys 0..r.
            causal = torch.ones(stop - start, k_len, dtype=torch.bool, device=query.device).tril(diagonal=start)
            if mask is None:
                mask = causal
            elif mask.dtype == torch.bool:
                mask = mask & causal
            else:
                mask = mask.masked_fill(~causal, float("-inf"))
        pieces.append(
            functional.scaled_dot_product_attention(
                query[..., start:stop, :], key, value, attn_mask=mask, dropout_p=dropout_p, is_causal=False, **kwargs
            )
        )
    return torch.cat(pieces, dim=-2)


def _batch_slice(tensor, query, part):
    """`tensor[part]` when its first dimension is the query's batch dimension (not broadcast)."""
    if tensor is None or tensor.dim() != query.dim() or tensor.shape[0] != query.shape[0]:
        return tensor
    return tensor[part]


def vae_encode(vae, sample, *args, **kwargs):
    """`vae.encode(sample, ...)`, a few images at a time on mps (see `chunk_bytes()`); the
    latent distributions are joined again, so `.latent_dist.sample(generator)` draws the same
    noise as one call would."""
    return _vae_chunks(vae.encode, vae, sample, False, args, kwargs, _join_encoded)


def vae_decode(vae, latents, *args, **kwargs):
    """`vae.decode(latents, ...)`, a few latents at a time on mps (see `chunk_bytes()`)."""
    return _vae_chunks(vae.decode, vae, latents, True, args, kwargs, _join_decoded)


def vae_item_bytes(vae, batch, decoding: bool) -> int:
    """Bytes of the widest single activation that one image (encode) or latent (decode) of
    `batch` produces in the VAE. At level k (resolution 1/2**k) the blocks carry
    block_out_channels[k] channels, and their neighbour's width arrives there too: the coarser
    block's upsampler output when decoding (256 channels at full resolution for
    (128, 256, 512, 512), twice the first block's width), the finer block's downsampler input when
    encoding (padded by one). The mid-block attention's score matrix (one head, at the coarsest level) counts too.
    Sizes are in float32 at least: MPS keeps some intermediates (scores, norms) in float32."""
    channels = list(getattr(getattr(vae, "config", None), "block_out_channels", None) or [128, 256, 512, 512])
    levels = len(channels)
    scale = 2 ** (levels - 1) if decoding else 1
    height, width = batch.shape[-2] * scale, batch.shape[-1] * scale
    widest = 0
    for k, width_k in enumerate(channels):
        neighbour = (
            channels[k + 1] if decoding and k + 1 < levels else channels[k - 1] if not decoding and k else width_k
        )
        pad = 0 if decoding else 1  # the encoder's downsamplers pad their input by one row and column
        pixels = ((height >> k) + pad) * ((width >> k) + pad)
        widest = max(widest, max(width_k, neighbour) * pixels)
    tokens = (height >> (levels - 1)) * (width >> (levels - 1))
    return max(widest, tokens * tokens) * max(batch.element_size(), 4)


def _vae_chunks(call, vae, batch, decoding, args, kwargs, join):
    """Run `call` on pieces of `batch` (first dimension) whose widest activation stays under the budget."""
    if batch.dim() < 3 or batch.shape[0] < 2 or not chunking_enabled(batch):
        return call(batch, *args, **kwargs)
    step = max(1, chunk_bytes() // vae_item_bytes(vae, batch, decoding))
    if step >= batch.shape[0]:
        return call(batch, *args, **kwargs)
    outputs = [call(piece, *args, **kwargs) for piece in batch.split(step)]
    joined = join(outputs)
    return call(batch, *args, **kwargs) if joined is None else joined


def _join_decoded(outputs):
    torch, first = _torch(), outputs[0]
    if isinstance(first, tuple):
        return (torch.cat([o[0] for o in outputs]), *first[1:])
    if torch.is_tensor(first):
        return torch.cat(outputs)
    if not torch.is_tensor(getattr(first, "sample", None)):
        return None
    first.sample = torch.cat([o.sample for o in outputs])
    return first


def _join_encoded(outputs):
    torch, first = _torch(), outputs[0]
    dists = [o[0] if isinstance(o, tuple) else getattr(o, "latent_dist", None) for o in outputs]
    if not all(torch.is_tensor(getattr(d, "parameters", None)) for d in dists):
        return None
    options = {"deterministic": dists[0].deterministic} if hasattr(dists[0], "deterministic") else {}
    joined = type(dists[0])(torch.cat([d.parameters for d in dists]), **options)
    if isinstance(first, tuple):
        return (joined, *first[1:])
    first.latent_dist = joined
    return first


# -- torch.cuda memory and capability queries with an MPS counterpart (engine: cuda-api.toml map) --


def memory_allocated(index=None) -> int:
    """The neutral `torch.cuda.memory_allocated()`: bytes held by tensors on the device in use
    (torch.mps.current_allocated_memory on mps, 0 on cpu)."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(index))
    if kind == "mps" and _mps_available():
        return int(torch.mps.current_allocated_memory())
    return 0


def memory_reserved(index=None) -> int:
    """The neutral `torch.cuda.memory_reserved()`: bytes the allocator holds (on mps the Metal
    driver's total, torch.mps.driver_allocated_memory; 0 on cpu)."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.memory_reserved(index))
    if kind == "mps" and _mps_available():
        return int(torch.mps.driver_allocated_memory())
    return 0


def mem_get_info(index=None) -> tuple[int, int]:
    """The neutral `torch.cuda.mem_get_info()`: (free, total) bytes. On mps the total is the
    recommended working set and free what the allocator does not hold of it; (0, 0) on cpu."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(index)
    if kind == "mps" and _mps_available():
        total = _mps_working_set()
        return max(0, total - int(torch.mps.driver_allocated_memory())), total
    return 0, 0


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """The neutral `torch.cuda.is_bf16_supported()`: CUDA's answer on cuda; on mps bfloat16 needs
    macOS 14 (torch.backends.mps.is_macos_or_newer(14, 0)); on cpu torch computes bfloat16."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    if kind == "mps" and _mps_available():
        return _mps_bf16()
    return kind == "cpu"


def _mps_bf16() -> bool:
    """torch.backends.mps.is_macos_or_newer(14, 0), which torch has from 2.3 only. torch before 2.3 has
    no bfloat16 on MPS on any macOS (its MPS backend raises "BFloat16 is not supported on MPS"; 2.3
    added bfloat16 for macOS 14 and this call with it), so there the answer is no, not the macOS's."""
    newer = getattr(_torch().backends.mps, "is_macos_or_newer", None)
    return bool(newer is not None and newer(14, 0))


# ---------------------------------------------------------------------------------------------
# Ops the torch a release pins for the Mac has no MPS kernel for (1.0: 2.1.2, 1.5: 2.4.1,
# 1.6/main: 2.5.1), read from each release's native_functions.yaml: aten::upsample_nearest3d and
# aten::_upsample_bicubic2d_aa (MPS kernels from torch 2.8), aten::_upsample_bilinear2d_aa and
# aten::_linalg_det (from 2.7). Without PYTORCH_ENABLE_MPS_FALLBACK=1 set
# before torch loads (ComfyUI loads it before any node), each raises NotImplementedError. On mps
# the helpers below compute them with ops MPS has in every release; elsewhere they are the plain call.


def _on_mps(tensor) -> bool:
    return getattr(getattr(tensor, "device", None), "type", None) == "mps"


def interpolate(
    input,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):  # noqa: A002
    """`F.interpolate`, with three MPS-only changes (elsewhere it is the plain call):

    - nearest upsampling runs in float32 and is cast back: float16 nearest on MPS gave black masks
      (LatentSync issue 48);
    - 3-D nearest that keeps the frame count (Upsample3D's scale (1, 2, 2)) is 2-D nearest over the
      frames folded into the batch: the same pixels, and no aten::upsample_nearest3d, which MPS
      lacks before torch 2.8;
    - antialiased bilinear/bicubic resizing of 4-D input is two matrix products with the
      resampling weights (see `_aa_weights`): aten::_upsample_bilinear2d_aa has no MPS kernel
      before torch 2.7, aten::_upsample_bicubic2d_aa none before 2.8."""
    functional = _torch().nn.functional
    options = {"align_corners": align_corners, "recompute_scale_factor": recompute_scale_factor, "antialias": antialias}
    if not _on_mps(input):
        return functional.interpolate(input, size, scale_factor, mode, **options)
    if mode == "nearest":
        upcast = input.to(_torch().float32)
        if input.dim() == 5:
            folded = _nearest_over_frames(upcast, size, scale_factor, recompute_scale_factor)
            if folded is not None:
                return folded.to(input.dtype)
        return functional.interpolate(upcast, size, scale_factor, mode, **options).to(input.dtype)
    if antialias and mode in ("bilinear", "bicubic") and input.dim() == 4 and not align_corners:
        return antialiased_resize(input, _output_size(input, size, scale_factor), mode)
    return functional.interpolate(input, size, scale_factor, mode, **options)


def _output_size(input, size, scale_factor) -> tuple[int, int]:  # noqa: A002
    """The (height, width) F.interpolate produces for 4-D input (floor of size x scale)."""
    if size is not None:
        return tuple(size) if not isinstance(size, int) else (size, size)
    scales = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
    height, width = input.shape[-2:]
    return int(height * float(scales[0])), int(width * float(scales[1]))


def _nearest_over_frames(input, size, scale_factor, recompute_scale_factor):  # noqa: A002
    """3-D nearest of (B, C, F, H, W) that keeps F, as 2-D nearest of (B*F, C, H, W); None when
    the frame axis would be resampled."""
    functional = _torch().nn.functional
    batch, channels, frames, height, width = input.shape
    if size is not None:
        size = (size,) * 3 if isinstance(size, int) else tuple(size)
        if len(size) != 3 or size[0] != frames:
            return None
        spatial = {"size": size[1:]}
    else:
        scales = (scale_factor,) * 3 if not isinstance(scale_factor, (tuple, list)) else tuple(scale_factor)
        if len(scales) != 3 or float(scales[0]) != 1.0:
            return None
        spatial = {
            "scale_factor": tuple(float(s) for s in scales[1:]),
            "recompute_scale_factor": recompute_scale_factor,
        }
    frames_first = input.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    out = functional.interpolate(frames_first, mode="nearest", **spatial)
    return out.reshape(batch, frames, channels, *out.shape[-2:]).permute(0, 2, 1, 3, 4)


@functools.lru_cache(maxsize=64)
def _aa_weights(length_in: int, length_out: int, mode: str):
    """The (length_out, length_in) matrix of antialiased resampling along one axis. Resizing is
    linear and separable, so PyTorch's own CPU kernel applied to an identity matrix gives exactly
    its weights (a resize that keeps the other axis is the identity there)."""
    torch = _torch()
    eye = torch.eye(length_in, dtype=torch.float32)[None, None]
    rows = torch.nn.functional.interpolate(
        eye, size=(length_out, length_in), mode=mode, align_corners=False, antialias=True
    )
    return rows[0, 0].contiguous()


def antialiased_resize(image, size, mode="bicubic"):
    """F.interpolate(image, size, mode=mode, antialias=True) for 4-D (or 3-D) input, as
    height_weights @ image @ width_weights.T in float32 on the image's own device: matrix
    products, which MPS runs in every torch release."""
    torch = _torch()
    squeeze = image.dim() == 3
    batch = image[None] if squeeze else image
    height_out, width_out = (int(s) for s in size)
    rows = _aa_weights(batch.shape[-2], height_out, mode).to(batch.device)
    cols = _aa_weights(batch.shape[-1], width_out, mode).to(batch.device)
    out = torch.matmul(torch.matmul(rows, batch.to(torch.float32)), cols.T).to(image.dtype)
    return out[0] if squeeze else out


def resize(img, size, interpolation=None, max_size=None, antialias=True):
    """`torchvision.transforms.functional.resize`; on mps, an antialiased bilinear/bicubic resize of
    a float tensor to an explicit (height, width) goes through `antialiased_resize` (stays on the
    GPU), any other form of it on mps through the CPU. Elsewhere it is the plain call."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    interpolation = InterpolationMode.BILINEAR if interpolation is None else interpolation
    if not _on_mps(img) or not antialias:
        return tvf.resize(img, size, interpolation=interpolation, max_size=max_size, antialias=antialias)
    mode = getattr(interpolation, "value", interpolation)
    explicit = isinstance(size, (list, tuple)) and len(size) == 2 and max_size is None
    if explicit and mode in ("bilinear", "bicubic") and img.is_floating_point() and img.dim() in (3, 4):
        return antialiased_resize(img, size, mode)
    return tvf.resize(img.cpu(), size, interpolation=interpolation, max_size=max_size, antialias=antialias).to(
        img.device
    )


def det(input):  # noqa: A002
    """`torch.det`; on mps a 2x2 determinant in closed form on the device (AlignRestore's rotation
    check), a larger one on the CPU: aten::_linalg_det has no MPS kernel before torch 2.7."""
    torch = _torch()
    if not _on_mps(input):
        return torch.det(input)
    if input.shape[-2:] == (2, 2):
        return input[..., 0, 0] * input[..., 1, 1] - input[..., 0, 1] * input[..., 1, 0]
    return torch.det(input.cpu()).to(input.device)


# The host value of each device timestep that `set_timesteps` made, by (storage address, offset).
_HOST_TIMESTEPS: dict = {}


def set_timesteps(scheduler, *args, **kwargs):
    """`scheduler.set_timesteps(..., device=device)`; on mps the schedule is made on the CPU, copied
    to the device once, and the host value of each device timestep kept for `scheduler_step`.
    Elsewhere it is the plain call."""
    torch = _torch()
    device = kwargs.get("device")
    if device is None or torch.device(device).type != "mps":
        return scheduler.set_timesteps(*args, **kwargs)
    result = scheduler.set_timesteps(*args, **dict(kwargs, device="cpu"))
    host = scheduler.timesteps
    on_device = host.to(device)
    scheduler.timesteps = on_device
    _HOST_TIMESTEPS.clear()
    if on_device.dim() == 1:
        address, offset = on_device.untyped_storage().data_ptr(), on_device.storage_offset()
        stride = on_device.stride(0)
        for index in range(len(host)):
            _HOST_TIMESTEPS[(address, offset + index * stride)] = host[index]
    return result


def scheduler_step(scheduler, model_output, timestep, *args, **kwargs):
    """`scheduler.step(model_output, timestep, ...)`, given the host value of a device timestep that
    `set_timesteps` made: diffusers' DDIM indexes a CPU tensor with it and compares it with 0, and on
    a device tensor each of those reads the value back from the GPU, waiting for the UNet queued before
    it. Any other timestep is passed as it is."""
    torch = _torch()
    if _HOST_TIMESTEPS and isinstance(timestep, torch.Tensor) and timestep.dim() == 0 and _on_mps(timestep):
        key = (timestep.untyped_storage().data_ptr(), timestep.storage_offset())
        timestep = _HOST_TIMESTEPS.get(key, timestep)
    return scheduler.step(model_output, timestep, *args, **kwargs)


# Set on a chunk that `release_chunk_memory` moved to host memory: the device it came from.
_CHUNK_DEVICE = "_lsync_port_chunk_device"


def release_chunk_memory(result):
    """The pipeline keeps every 16-frame chunk it decodes until the whole video is restored; on
    MPS the kept chunks filled the device as the video grew. On mps the chunk moves to host
    memory (kept in its dtype, marked with the device it came from: `join_chunks`) and MPS's
    cached, unused blocks are handed back, as the macOS fork does after every chunk. On cuda and
    cpu it returns `result` unchanged; upstream's own empty_cache calls stay where they are."""
    if not _on_mps(result):
        return result
    host = result.cpu()
    setattr(host, _CHUNK_DEVICE, str(result.device))
    del result
    _torch().mps.empty_cache()
    return host


def join_chunks(chunks):
    """`torch.cat(chunks)`; chunks that `release_chunk_memory` moved to host memory stay there, as
    `HostFrames`, which hands restore_video one frame at a time on the device it came from."""
    joined = _torch().cat(chunks)
    device = getattr(chunks[0], _CHUNK_DEVICE, None) if len(chunks) else None
    return joined if device is None else HostFrames(joined, device)


class HostFrames:
    """Decoded frames in host memory; each frame goes to `device` when it is read. The pipelines'
    restore_video reads the frames one by one (len, iteration, indexing, `.shape`), resizes each
    on the device and pastes it back, so restoring holds one frame on the GPU, not the video."""

    def __init__(self, frames, device):
        self.frames = frames
        self.device = _torch().device(device)

    @property
    def shape(self):
        return self.frames.shape

    @property
    def dtype(self):
        return self.frames.dtype

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return (frame.to(self.device) for frame in self.frames)

    def __getitem__(self, index):
        part = self.frames[index]
        return HostFrames(part, self.device) if isinstance(index, slice) else part.to(self.device)


# --- Media I/O that needs neither torchvision.io, torchaudio's I/O, nor an FFmpeg on PATH -----------
# torchvision.io.read_video/write_video are gone from torchvision 0.26 (torch 2.11) on; torchaudio's
# load/save go through torchcodec from 2.9 on, which needs FFmpeg's shared libraries; ComfyUI Desktop
# for macOS ships neither torchcodec nor an `ffmpeg` binary. PyAV (a ComfyUI requirement) and
# soundfile (a wrapper requirement) bundle their own FFmpeg and libsndfile. Both are imported inside
# the functions: importing the helper costs nothing.

FFMPEG_PREFIXES = ("/opt/homebrew/bin", "/usr/local/bin")  # Homebrew on Apple Silicon, on Intel
FFMPEG_FIX = "install it with `brew install ffmpeg`, or `pip install imageio-ffmpeg` (which bundles one)"


class FFmpegNotFoundError(FileNotFoundError):
    """No `ffmpeg` binary anywhere `ffmpeg()` looks. A FileNotFoundError, as running a missing
    `ffmpeg` is, so the tree's own `except FileNotFoundError` handlers behave as before."""


def ffmpeg() -> str:
    """The `ffmpeg` binary to run: the one on PATH, else Homebrew's (/opt/homebrew/bin, /usr/local/bin:
    an app started from the Dock does not see a shell's PATH), else the one bundled with
    imageio-ffmpeg (`imageio_ffmpeg.get_ffmpeg_exe()`). None found: FFmpegNotFoundError naming the
    fix; the message also goes to stderr once, for callers that catch the error and print their own."""
    import shutil

    found = shutil.which("ffmpeg") or next(
        (path for prefix in FFMPEG_PREFIXES if (path := shutil.which("ffmpeg", path=prefix))), None
    )
    if found:
        return found
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or installed without its binary (RuntimeError)
        bundled = None
    if bundled and os.path.isfile(bundled):
        return bundled
    message = f"ffmpeg not found (PATH, {', '.join(FFMPEG_PREFIXES)}, imageio-ffmpeg): {FFMPEG_FIX}"
    if not getattr(sys, "_lsync_port_ffmpeg_told", False):
        sys._lsync_port_ffmpeg_told = True  # type: ignore[attr-defined]
        print(f"lsync-port: {message}", file=sys.stderr)
    raise FFmpegNotFoundError(message)


def ffmpeg_shell() -> str:
    """`ffmpeg()` quoted for a shell command line (`subprocess.run(f"{...} -i in.mp4 ...", shell=True)`):
    the bundled binary's path may hold spaces."""
    import shlex

    return shlex.quote(ffmpeg())


def _av():
    try:
        import av
    except ImportError as error:
        raise ImportError("PyAV is needed to read and write video here: pip install av") from error
    return av


_AV_SAMPLE_DTYPES = {"dbl": "<f8", "flt": "<f4", "s16": "<i2", "s32": "<i4", "s64": "<i8", "u8": "u1"}


def write_video(
    filename,
    video_array,
    fps,
    video_codec="libx264",
    options=None,
    audio_array=None,
    audio_fps=None,
    audio_codec=None,
    audio_options=None,
):
    """`torchvision.io.write_video` on PyAV: `video_array` is [T, H, W, C] uint8 (a tensor or an
    array; C = 3, RGB), `fps` frames a second; `audio_array` [channels, samples] at `audio_fps`.
    Written as torchvision 0.25 writes it (yuv420p, `options` as the codec's options)."""
    import numpy as np

    av, torch = _av(), _torch()
    video = torch.as_tensor(video_array, dtype=torch.uint8).numpy(force=True)
    if isinstance(fps, float):
        fps = int(round(fps))
    with av.open(str(filename), mode="w") as container:
        stream = container.add_stream(video_codec, rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "rgb24" if video_codec == "libx264rgb" else "yuv420p"
        stream.options = dict(options or {})
        if audio_array is not None:
            sound = container.add_stream(audio_codec, rate=audio_fps)
            sound.options = dict(audio_options or {})
            samples = torch.as_tensor(audio_array).numpy(force=True)
            channels = samples.shape[0]
            layout = "stereo" if channels > 1 else "mono"
            sample_format = sound.format.name
            samples = samples.astype(np.dtype(_AV_SAMPLE_DTYPES[sample_format.rstrip("p")]))
            if not sound.format.is_planar:  # packed formats take one row of interleaved samples
                samples = samples.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=layout)
            frame.sample_rate = audio_fps
            for packet in sound.encode(frame):
                container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pts_bounds(start_pts, end_pts, pts_unit, stream):
    """torchvision's window in the stream's own time base: [start, end] in pts."""
    import math

    if pts_unit != "sec":
        return start_pts, end_pts
    scale = 1 / stream.time_base
    start = int(math.floor(start_pts * scale))
    end = end_pts if end_pts == float("inf") else int(math.ceil(end_pts * scale))
    return start, end


def read_video(filename, start_pts=0, end_pts=None, pts_unit="pts", output_format="THWC"):
    """`torchvision.io.read_video` on PyAV: (vframes, aframes, info). vframes: [T, H, W, C] uint8
    (or [T, C, H, W] with output_format="TCHW"); aframes: [channels, samples] as the decoder gives
    them (float32 for AAC); info: {"video_fps": float, "audio_fps": int} for the streams present.
    start_pts/end_pts bound the frames kept, in pts or, with pts_unit="sec", in seconds."""
    import numpy as np

    av, torch = _av(), _torch()
    output_format = output_format.upper()
    if output_format not in ("THWC", "TCHW"):
        raise ValueError(f"output_format should be either 'THWC' or 'TCHW', got {output_format}.")
    if not os.path.exists(filename):
        raise RuntimeError(f"File not found: {filename}")
    end_pts = float("inf") if end_pts is None else end_pts
    if end_pts < start_pts:
        raise ValueError(f"end_pts should be larger than start_pts, got start_pts={start_pts} and end_pts={end_pts}")
    info: dict = {}
    frames, sound = [], []
    with av.open(str(filename), metadata_errors="ignore") as container:
        if container.streams.video:
            stream = container.streams.video[0]
            start, end = _pts_bounds(start_pts, end_pts, pts_unit, stream)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts > end:
                    break
                if frame.pts is None or frame.pts >= start:
                    frames.append(frame.to_ndarray(format="rgb24"))
            if stream.average_rate is not None:
                info["video_fps"] = float(stream.average_rate)
    with av.open(str(filename), metadata_errors="ignore") as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            start, end = _pts_bounds(start_pts, end_pts, pts_unit, stream)
            first = last = None
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts > end:
                    break
                if frame.pts is None or frame.pts + frame.samples > start:
                    first = frame.pts if first is None else first
                    last = frame.pts
                    sound.append(frame.to_ndarray())
            info["audio_fps"] = stream.rate
    vframes = torch.as_tensor(np.stack(frames)) if frames else torch.empty((0, 1, 1, 3), dtype=torch.uint8)
    if output_format == "TCHW":
        vframes = vframes.permute(0, 3, 1, 2)
    aframes = torch.as_tensor(np.concatenate(sound, 1)) if sound else torch.empty((1, 0), dtype=torch.float32)
    if sound and first is not None:
        # Trim to the window by sample, as torchvision's _align_audio_frames does.
        step = (last - first + 1) / aframes.shape[1]
        begin = int((start - first) / step) if first < start else 0
        stop = int((end - last) / step) if last > end else aframes.shape[1]
        aframes = aframes[:, begin:stop]
    return vframes, aframes, info


_SOUNDFILE_SUBTYPES = {("PCM_S", 16): "PCM_16", ("PCM_S", 24): "PCM_24", ("PCM_S", 32): "PCM_32",
                       ("PCM_U", 8): "PCM_U8", ("PCM_F", 32): "FLOAT", ("PCM_F", 64): "DOUBLE"}  # fmt: skip


def _soundfile():
    try:
        import soundfile
    except ImportError:
        return None
    return soundfile


def save_audio(
    uri,
    src,
    sample_rate,
    channels_first=True,
    format=None,  # noqa: A002
    encoding=None,
    bits_per_sample=None,
    buffer_size=4096,
    backend=None,
    compression=None,
):
    """`torchaudio.save` on soundfile (PyAV where soundfile is not installed): `src` is
    [channels, frames] (channels_first) float or int; a float tensor is written as 32-bit float
    unless `encoding`/`bits_per_sample` say otherwise (torchaudio's names: "PCM_S", 16, ...).
    `buffer_size`, `backend` and `compression` are accepted for torchaudio's signature."""
    torch = _torch()
    data = torch.as_tensor(src).detach().cpu()
    if data.dim() == 1:
        data = data[None] if channels_first else data[:, None]
    frames = data.T if channels_first else data  # [frames, channels]
    if encoding is None and bits_per_sample is None:
        encoding, bits_per_sample = {
            torch.int16: ("PCM_S", 16), torch.int32: ("PCM_S", 32), torch.uint8: ("PCM_U", 8),
            torch.float64: ("PCM_F", 64),
        }.get(data.dtype, ("PCM_F", 32))  # fmt: skip
    encoding = encoding or ("PCM_F" if data.is_floating_point() else "PCM_S")
    bits_per_sample = bits_per_sample or (32 if encoding in ("PCM_F", "PCM_S") else 8)
    soundfile = _soundfile()
    if soundfile is not None:
        subtype = _SOUNDFILE_SUBTYPES.get((encoding, bits_per_sample))
        if data.is_floating_point() and subtype not in ("FLOAT", "DOUBLE"):
            frames = frames.float()
        soundfile.write(str(uri), frames.numpy(), int(sample_rate), subtype=subtype, format=format)
        return
    _save_audio_av(uri, frames.float().numpy(), int(sample_rate), encoding, bits_per_sample, format)


def _save_audio_av(uri, frames, sample_rate, encoding, bits_per_sample, container_format=None):
    """WAV (or what the file name says) through PyAV: `frames` float32 [frames, channels]."""
    import numpy as np

    av = _av()
    codec = {("PCM_S", 16): "pcm_s16le", ("PCM_S", 32): "pcm_s32le", ("PCM_F", 64): "pcm_f64le"}.get(
        (encoding, bits_per_sample), "pcm_f32le"
    )
    channels = frames.shape[1]
    with av.open(str(uri), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "stereo" if channels == 2 else "mono" if channels == 1 else f"{channels}c"
        kind = stream.format.name
        dtype = np.dtype(_AV_SAMPLE_DTYPES[kind.rstrip("p")])
        samples = frames if dtype.kind == "f" else np.clip(frames, -1, 1) * np.iinfo(dtype).max
        samples = samples.astype(dtype)
        samples = samples.T if stream.format.is_planar else samples.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=kind, layout=stream.layout.name)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def load_audio(
    uri,
    frame_offset=0,
    num_frames=-1,
    normalize=True,
    channels_first=True,
    format=None,  # noqa: A002
    buffer_size=4096,
    backend=None,
):
    """`torchaudio.load` on soundfile (PyAV for what soundfile cannot read, or where it is not
    installed): (waveform, sample_rate), waveform float32 [channels, frames] in [-1, 1]
    (channels_first; `normalize=False` keeps 16/32-bit integer PCM as int16/int32)."""
    torch = _torch()
    soundfile = _soundfile()
    data = None
    if soundfile is not None:
        try:
            with soundfile.SoundFile(str(uri)) as handle:
                dtype = "float32"
                if not normalize and handle.subtype in ("PCM_16", "PCM_32"):
                    dtype = "int16" if handle.subtype == "PCM_16" else "int32"
                handle.seek(frame_offset)
                data = handle.read(num_frames, dtype=dtype, always_2d=True)
                sample_rate = handle.samplerate
        except soundfile.LibsndfileError:
            data = None  # a format libsndfile does not read (m4a, ...): PyAV below
    if data is None:
        data, sample_rate = _load_audio_av(uri, frame_offset, num_frames)
    waveform = torch.from_numpy(data)
    return (waveform.T.contiguous() if channels_first else waveform), sample_rate


def _load_audio_av(uri, frame_offset, num_frames):
    """(float32 [frames, channels], sample_rate) through PyAV."""
    import numpy as np

    av = _av()
    with av.open(str(uri)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        parts = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        parts += [out.to_ndarray() for out in resampler.resample(None)]
        sample_rate = stream.rate
    data = np.concatenate(parts, axis=1).T if parts else np.zeros((0, 1), np.float32)
    end = None if num_frames is None or num_frames < 0 else frame_offset + num_frames
    return np.ascontiguousarray(data[frame_offset:end], dtype=np.float32), sample_rate


def sinc_resample_kernel(orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99,
                         resampling_method="sinc_interp_hann", beta=None, dtype=None, device=None):  # fmt: skip
    """(kernel, width) of torchaudio's band-limited windowed-sinc resampling, computed as
    torchaudio.functional does it (same kernel, so the same output): `orig_freq` to `new_freq`,
    both reduced by their gcd; Hann window by default, Kaiser with sinc_interp_kaiser."""
    import math

    torch = _torch()
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError("resampling needs integer frequencies; scale both to integers with the same ratio")
    if resampling_method not in ("sinc_interp_hann", "sinc_interp_kaiser"):
        raise ValueError(f"Invalid resampling method: {resampling_method}")
    if lowpass_filter_width <= 0:
        raise ValueError("Low pass filter width should be positive.")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base = min(orig, new) * rolloff  # below both Nyquist frequencies: antialiasing
    width = math.ceil(lowpass_filter_width * orig / base)
    device = torch.device("cpu") if device is None else device
    idx = torch.arange(-width, width + orig, dtype=dtype or torch.float64, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + idx
    t = (t * base).clamp_(-lowpass_filter_width, lowpass_filter_width)
    if resampling_method == "sinc_interp_hann":
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    else:
        beta = torch.tensor(float(14.769656459379492 if beta is None else beta))
        window = torch.i0(beta * torch.sqrt(1 - (t / lowpass_filter_width) ** 2)) / torch.i0(beta)
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t) * (window * (base / orig))
    return (kernels.to(torch.float32) if dtype is None else kernels), width


def resample(waveform, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99,
             resampling_method="sinc_interp_hann", beta=None):  # fmt: skip
    """`torchaudio.functional.resample` in plain torch: `waveform` [..., time], float."""
    if orig_freq == new_freq:
        return waveform
    kernel, width = sinc_resample_kernel(
        orig_freq, new_freq, lowpass_filter_width, rolloff, resampling_method, beta, waveform.dtype, waveform.device
    )
    return _apply_resample_kernel(waveform, orig_freq, new_freq, kernel, width)


def _apply_resample_kernel(waveform, orig_freq, new_freq, kernel, width):
    import math

    torch = _torch()
    if not waveform.is_floating_point():
        raise TypeError(f"Expected floating point type for waveform tensor, but received {waveform.dtype}.")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    shape = waveform.size()
    waveform = waveform.reshape(-1, shape[-1])
    count, length = waveform.shape
    padded = torch.nn.functional.pad(waveform, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(padded), stride=orig)
    out = out.transpose(1, 2).reshape(count, -1)[..., : math.ceil(new * length / orig)]
    return out.view(shape[:-1] + out.shape[-1:])


@functools.cache
def _resample_module():
    torch = _torch()

    class Resample(torch.nn.Module):
        """torchaudio.transforms.Resample without torchaudio: the kernel is a buffer, so `.to(device)`
        moves it as torchaudio's does."""

        def __init__(self, orig_freq=16000, new_freq=16000, resampling_method="sinc_interp_hann",
                     lowpass_filter_width=6, rolloff=0.99, beta=None, *, dtype=None):  # fmt: skip
            super().__init__()
            self.orig_freq, self.new_freq = orig_freq, new_freq
            self.resampling_method, self.lowpass_filter_width = resampling_method, lowpass_filter_width
            self.rolloff, self.beta = rolloff, beta
            if orig_freq != new_freq:
                kernel, self.width = sinc_resample_kernel(
                    orig_freq, new_freq, lowpass_filter_width, rolloff, resampling_method, beta, dtype
                )
                self.register_buffer("kernel", kernel, persistent=False)

        def forward(self, waveform):
            if self.orig_freq == self.new_freq:
                return waveform
            return _apply_resample_kernel(waveform, self.orig_freq, self.new_freq, self.kernel, self.width)

    return Resample


def resampler(orig_freq=16000, new_freq=16000, resampling_method="sinc_interp_hann", lowpass_filter_width=6,
              rolloff=0.99, beta=None, *, dtype=None):  # fmt: skip
    """`torchaudio.transforms.Resample(...)` without torchaudio: a torch.nn.Module with the same
    arguments and the same output (its windowed-sinc kernel, computed as torchaudio computes it)."""
    return _resample_module()(orig_freq, new_freq, resampling_method, lowpass_filter_width, rolloff, beta, dtype=dtype)


def comfyui_temp_directory(folder_paths=None) -> str:
    """ComfyUI's own temp directory, what `folder_paths.get_temp_directory()` answers in ComfyUI
    (`--temp-directory` included): `folder_paths.temp_directory`, where ComfyUI keeps it, else its
    default, `temp` in the ComfyUI root (the folder of folder_paths.py). Never a folder outside
    ComfyUI. get_temp_directory() itself is not asked: the wrapper points it at a folder of its own
    after import, and two folders up from that is the system's temp folder."""
    if folder_paths is None:
        import folder_paths
    kept = getattr(folder_paths, "temp_directory", None)
    if isinstance(kept, str) and kept:
        return kept
    return os.path.join(os.path.dirname(os.path.abspath(folder_paths.__file__)), "temp")
