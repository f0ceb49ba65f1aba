"""Count the work of a shape-only run: FLOPs and bytes moved, per phase, binned for a roofline.

Standalone on purpose (only torch): the forecast child loads it by path under the tree's
interpreter, which need not have lsync-port installed.

FLOPs are torch.utils.flop_counter's (its registry: matrix products, convolutions and the fused
attention kernels, 2 FLOPs a multiply-add), plus MPS's attention kernel
(`_scaled_dot_product_attention_math_for_mps`, which the registry lacks), counted as the fused ones
are. Elementwise ops, norms and softmax count 0 FLOPs there: on a GPU they are bound by memory,
and their bytes below carry them.

Bytes moved: every op that is not a view reads its tensor inputs and writes its outputs once (an
expanded input is read at its storage's size). No cache reuse and no fusion: a kernel that keeps
a tile in on-chip memory moves less, so this is an upper bound on traffic, and the roofline built
on it a lower bound on speed only as far as the FLOPs go.

For the roofline, each op lands in a bin by its arithmetic intensity (FLOPs per byte, a quarter
of an octave wide); ops with no FLOPs land in "memory". A chip with peak P FLOP/s and bandwidth
B bytes/s spends max(flops / P, bytes / B) on a bin (lsync-port's pack/apple_chips.py).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

_ATTENTION = ("scaled_dot_product", "_flash_attention", "_efficient_attention")
_NO_TRAFFIC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
MEMORY_BIN = "memory"
BINS_PER_OCTAVE = 4


def _registry():
    from torch.utils.flop_counter import flop_registry

    return flop_registry


def _mps_attention_flops(query, key, value, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _tensor_bytes(tensor: torch.Tensor) -> int:
    size = tensor.numel() * tensor.element_size()
    with contextlib.suppress(RuntimeError, NotImplementedError):
        size = min(size, tensor.untyped_storage().nbytes())
    return size


def empty_phase() -> dict:
    return {"flops": 0, "bytes": 0, "attention_flops": 0, "attention_bytes": 0, "ops": 0, "bins": {}}


class WorkMeter(TorchDispatchMode):
    """FLOPs and bytes of every op run under it, per phase (`during`)."""

    def __init__(self):
        super().__init__()
        self.registry = _registry()
        self.phase = ""
        self.phases: dict[str, dict] = {}
        self.total = empty_phase()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.count(func, args, kwargs, out)
        return out

    def flops(self, func, args, kwargs, out) -> int:
        packet = func._overloadpacket
        counter = self.registry.get(packet)
        if counter is not None:
            return int(counter(*args, **kwargs, out_val=out))
        if packet.__name__ == "_scaled_dot_product_attention_math_for_mps":
            return int(_mps_attention_flops(*args))
        return 0

    def count(self, func, args, kwargs, out) -> None:
        name = func._overloadpacket.__name__
        if getattr(func, "is_view", False) or name in _NO_TRAFFIC:
            return
        flops = self.flops(func, args, kwargs, out)
        moved = sum(_tensor_bytes(t) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        moved += sum(_tensor_bytes(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))
        attention = any(part in name for part in _ATTENTION)
        for record in (self.total, self.phases.setdefault(self.phase, empty_phase()) if self.phase else None):
            if record is None:
                continue
            record["flops"] += flops
            record["bytes"] += moved
            record["ops"] += 1
            if attention:
                record["attention_flops"] += flops
                record["attention_bytes"] += moved
            key = bin_key(flops, moved)
            entry = record["bins"].setdefault(key, [0, 0])
            entry[0] += flops
            entry[1] += moved

    @contextlib.contextmanager
    def during(self, phase: str):
        previous = self.phase
        self.phase = phase
        self.phases.setdefault(phase, empty_phase())
        try:
            yield
        finally:
            self.phase = previous


def bin_key(flops: int, moved: int) -> str:
    if flops <= 0:
        return MEMORY_BIN
    intensity = flops / max(moved, 1)
    return str(round(BINS_PER_OCTAVE * math.log2(intensity)))
