"""Count device bytes of a shape-only run: live, peak and the largest single buffer.

Standalone on purpose (only torch): the forecast child loads it by path under the tree's
interpreter, which need not have lsync-port installed.

Every tensor that an aten op returns is looked at; its storage is counted once, when first seen,
and released when the storage dies (a weakref finalizer on the storage: torch keeps one Python
object per live storage, so the finalizer fires when the last view of it is gone). Storages made
before the meter started (the weights) are not counted here: the caller adds them.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class MemoryMeter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.peak_op = ""
        self.largest = 0
        self.largest_op = ""
        self.largest_shape: tuple[int, ...] = ()
        self.phase = ""
        self.phases: dict[str, dict] = {}
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            # Device tensors only: the CPU scalars a scheduler step makes are host memory.
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "cpu":
                self._track(leaf, func)
        return out

    def _track(self, tensor: torch.Tensor, func) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._sizes:
            return  # a view, or an in-place result: no new buffer
        size = storage.nbytes()
        self._sizes[key] = size
        weakref.finalize(storage, self._free, key)
        self.live += size
        name = str(func).removeprefix("aten.").removesuffix(".default") + (f" in {self.phase}" if self.phase else "")
        if self.live > self.peak:
            self.peak, self.peak_op = self.live, name
        if size > self.largest:
            self.largest, self.largest_op, self.largest_shape = size, name, tuple(tensor.shape)
        if self.phase:
            record = self.phases[self.phase]
            record["peak_bytes"] = max(record["peak_bytes"], self.live)
            record["largest_buffer_bytes"] = max(record["largest_buffer_bytes"], size)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    @contextlib.contextmanager
    def during(self, phase: str):
        """Label the allocations of a phase and record its own peak and largest buffer."""
        previous = self.phase
        self.phase = phase
        record = self.phases.setdefault(phase, {"peak_bytes": self.live, "largest_buffer_bytes": 0})
        record["peak_bytes"] = max(record["peak_bytes"], self.live)
        try:
            yield record
        finally:
            self.phase = previous


def module_bytes(*modules) -> int:
    """Bytes of the parameters and buffers of modules (each storage once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            storage = tensor.untyped_storage()
            seen[id(storage)] = storage.nbytes()
    return sum(seen.values())
