"""Device policy for a LatentSync tree ported by lsync-port.

Written into the tree by `lsync-port apply` and removed by `lsync-port revert`; rewritten code
calls it instead of naming "cuda". The device is chosen when the code runs, not when it is
ported, so one ported tree runs on Apple Silicon (mps), NVIDIA (cuda) and plain CPUs alike.

Environment:
  LATENTSYNC_DEVICE  mps | cuda | cuda:N | cpu    overrides the automatic choice (mps > cuda > cpu)
  LATENTSYNC_DTYPE   float16 | bfloat16 | float32  overrides the dtype policy
  LATENTSYNC_MPS_CHUNKING  1 (default) | 0 | force  attention and VAE in chunks on mps; 0 turns it
                                                   off, force chunks on every device (for tests)
  LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES  bytes one chunk may use (default 1 GiB; Metal's limit
                                        for one buffer is 2**32 bytes)
"""

from __future__ import annotations

import os

DEVICE_ENV = "LATENTSYNC_DEVICE"
DTYPE_ENV = "LATENTSYNC_DTYPE"
CHUNKING_ENV = "LATENTSYNC_MPS_CHUNKING"
CHUNK_BYTES_ENV = "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES"
DEFAULT_CHUNK_BYTES = 1 << 30  # well under Metal's 2**32-byte limit for one buffer

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
    """The neutral `torch.cuda.set_per_process_memory_fraction`. On mps the fraction is of the
    recommended working set (PyTorch's own default is 1.7); a PYTORCH_MPS_HIGH_WATERMARK_RATIO the
    user set wins over the code's choice."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    elif kind == "mps" and _mps_available() and not os.environ.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO"):
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
    return _vae_chunks(vae.encode, vae, sample, 1, args, kwargs, _join_encoded)


def vae_decode(vae, latents, *args, **kwargs):
    """`vae.decode(latents, ...)`, a few latents at a time on mps (see `chunk_bytes()`)."""
    return _vae_chunks(vae.decode, vae, latents, _vae_scale(vae), args, kwargs, _join_decoded)


def _vae_scale(vae) -> int:
    channels = getattr(getattr(vae, "config", None), "block_out_channels", None)
    return 2 ** (len(channels) - 1) if channels else 8


def _vae_chunks(call, vae, batch, scale, args, kwargs, join):
    """Run `call` on pieces of `batch` (first dimension) that each stay under the budget."""
    if batch.dim() < 3 or batch.shape[0] < 2 or not chunking_enabled(batch):
        return call(batch, *args, **kwargs)
    channels = getattr(getattr(vae, "config", None), "block_out_channels", None) or [128]
    height, width = batch.shape[-2] * scale, batch.shape[-1] * scale
    tokens = height * width // 64  # the mid-block attention runs at 1/8 resolution
    per_item = max(channels[0] * height * width, tokens * tokens) * max(batch.element_size(), 4)
    step = max(1, chunk_bytes() // per_item)
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
        total = int(torch.mps.recommended_max_memory())
        return max(0, total - int(torch.mps.driver_allocated_memory())), total
    return 0, 0


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """The neutral `torch.cuda.is_bf16_supported()`: CUDA's answer on cuda; on mps bfloat16 needs
    macOS 14 (torch.backends.mps.is_macos_or_newer(14, 0)); on cpu torch computes bfloat16."""
    torch, kind = _torch(), device_type()
    if kind == "cuda" and torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    if kind == "mps" and _mps_available():
        return bool(torch.backends.mps.is_macos_or_newer(14, 0))
    return kind == "cpu"
