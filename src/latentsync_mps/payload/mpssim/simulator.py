"""The checks and the bookkeeping of the simulated device: `Simulator.dispatch` judges every aten op
against the target torch's MPS rules, then computes it on the CPU."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .stalls import COPY, CPU, READBACK, TO_DEVICE, TO_HOST, StallCounter, watching, watching_class
from .support import ABSENT, BOXED, EXPLICIT, IMPLICIT, KERNEL, MISSING_NO_CPU, MISSING_VIEW, fallback_rescues
from .tensor import MPSSimTensor, _BaseGenerator, _generator_is_mps, _is_cpu, _is_mps, _unwrap, _wrap

# The macOS the simulated machine answers with (torch.backends.mps.is_macos_or_newer): 15, so SDPA on
# strided q/k/v takes MPS's fused route as on current Macs. bfloat16 (macOS 14) is still a warning.
# A target torch whose wheel needs a newer macOS (its table's min_macos) raises it: see simulated_macos.
SIMULATED_MACOS = (15, 0)


def simulated_macos(table: dict) -> tuple[int, ...]:
    """The macOS the simulated Mac runs for a target: SIMULATED_MACOS, or the oldest macOS the target
    torch's wheel installs on (min_macos) where that is newer; a Mac cannot run a torch its macOS is too old for."""
    needed = table.get("min_macos")
    floor = tuple(int(part) for part in needed.split(".")) if needed else ()
    return max(SIMULATED_MACOS, floor)


# The simulated Mac's memory: 16 GB, the smallest current Apple Silicon configuration, whose
# recommended working set (torch.mps.recommended_max_memory) Metal puts at two thirds of its RAM,
# 10.7 GiB. The runtime helper's dtype policy then takes the float16 path such a Mac takes,
# whatever the memory of the machine running the simulation.
SIMULATED_MAC_RAM = 16 * 2**30
# What torch.backends.mps.get_name() / get_core_count() (torch 2.15 and later) answer: a base M4, whose
# GPU has 10 cores and which ships with 16 GB.
SIMULATED_MAC_NAME = "Apple M4"
SIMULATED_MAC_GPU_CORES = 10

FLOAT64_ERROR = (
    "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64. "
    "Please use float32 instead."
)
COMPLEX128_ERROR = "MPS does not support complex128 (complex64 needs macOS 14)."
BFLOAT16_WARNING = "bfloat16 on MPS needs macOS 14 or newer (emulated, slowly, on M1/M2)."
NUMPY_ERROR = (
    "can't convert mps:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."
)
FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"

# Metal's limit for one buffer: MPS asserts "total bytes of NDArray > 2**32" (and aborts) beyond it.
METAL_BUFFER_LIMIT = 2**32


# Ops whose CPU float16 kernels are many times slower than float32, computed in float32 and rounded to
# float16. The result is what a float16 kernel that accumulates in float32 gives, as the CPU's own
# float16 kernels (and Metal's) do. Measured on one thread, torch 2.13 and 2.14 (docs/benchmarks.md):
# strided convolution up to 20x slower in float16, grid_sample 20-40x, and the matrix products 7 to 28x
# (addmm 20480x32 @ 32x256: 127 ms against 19 ms upcast; bmm 20x1024x32 @ 32x1024: 1306 against 105).
_FLOAT32_COMPUTE = {
    torch.ops.aten.convolution.default,
    torch.ops.aten.grid_sampler_2d.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.mm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}
_BADDBMM, _BMM = torch.ops.aten.baddbmm.default, torch.ops.aten.bmm.default
# Ops whose float16 kernel is slower only on small tensors, where the float32 copies stay in the cache:
# upcast below this many elements of the first argument. Above it the copies cost more than the op
# (10x32x256x256, a VAE decoder's: gelu 36 ms in float16 against 129 upcast, group_norm 55 against 130;
# 2x32x10x32x32, a UNet's: gelu 0.62 against 0.47, group_norm 0.78 against 0.32). silu's float16
# kernel was as fast or faster at every size measured, so silu is never upcast.
_FLOAT32_BELOW = {
    torch.ops.aten.gelu.default: 2**21,
    torch.ops.aten.native_group_norm.default: 2**21,
}


def _has_half(args) -> bool:
    for value in args:
        if isinstance(value, torch.Tensor) and value.dtype is torch.float16:
            return True
    return False


def _computes_in_float32(func, args) -> bool:
    """Whether a float16 op is computed through float32 copies (the faster way on this CPU)."""
    if func in _FLOAT32_COMPUTE:
        return _has_half(args)
    limit = _FLOAT32_BELOW.get(func)
    if limit is None or not args or not isinstance(args[0], torch.Tensor):
        return False
    return args[0].dtype is torch.float16 and args[0].numel() < limit


_HALF_MISSING = re.compile(r"not implemented for '(Half|BFloat16)'")
# Ops that may take CPU tensors next to mps ones on MPS: copies between devices, and CPU indices.
_MIXING_ALLOWED = {
    "aten::copy_",
    "aten::_copy_from",
    "aten::_copy_from_and_resize",
    "aten::_to_copy",
    "aten::index.Tensor",
    "aten::index_put_",
    "aten::index_put",
    "aten::_index_put_impl_",
    "aten::set_.source_Tensor",
    "aten::lift_fresh",
    "aten::lift_fresh_copy",
}


# Ops that read a value back to the host: the scalar read (item(), float(t), bool(t)) and the ops whose
# output size depends on the data, which MPS knows only once it has run the queue.
_READBACK_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
    "equal",
}
_COPY_OPS = {"aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize", "aten::_to_copy"}


def _nbytes(value) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def _has_bool_mask(index) -> bool:
    if type(index) in (tuple, list):
        return any(_has_bool_mask(i) for i in index)
    return isinstance(index, MPSSimTensor) and index.dtype in (torch.bool, torch.uint8)


class _OpInfo:
    """What dispatch needs to know about an overload, computed once."""

    __slots__ = ("name", "status", "write_returns", "inplace_view", "mutated", "rules", "readback")

    def __init__(self, func, table):
        self.name = func.name()
        namespace = self.name.split("::", 1)[0]
        self.status = table["ops"].get(self.name, "unknown" if namespace == "aten" else "other")
        schema = func._schema
        self.write_returns = []
        self.mutated = []
        arguments = schema.arguments
        for position, argument in enumerate(arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                self.mutated.append((position, argument.name, argument.kwarg_only))
        for ret in schema.returns:
            found = None
            if ret.alias_info is not None and ret.alias_info.is_write:
                for position, argument in enumerate(arguments):
                    if argument.alias_info is not None and argument.alias_info.before_set == ret.alias_info.before_set:
                        found = (position, argument.name, argument.kwarg_only)
                        break
            self.write_returns.append(found)
        self.inplace_view = torch.Tag.inplace_view in func.tags
        self.rules: list[dict] = []  # dtype expectations and numerics defects of the target torch
        base = self.name.split("::", 1)[-1].split(".", 1)[0]
        self.readback = namespace == "aten" and (base in _READBACK_OPS or self.name == "aten::repeat_interleave.Tensor")


def _argument(args, kwargs, where):
    position, name, kwarg_only = where
    if not kwarg_only and position < len(args):
        return args[position]
    return kwargs.get(name)


class _Mode(TorchDispatchMode):
    def __init__(self, simulator):
        super().__init__()
        self.simulator = simulator

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.simulator.dispatch(func, types, args, kwargs)


class Simulator:
    """The checks and the bookkeeping; `install()` makes one and hooks it into torch."""

    def __init__(self, tree: str | os.PathLike, table: dict, fallback_enabled: bool | None = None):
        self.tree = str(Path(tree).resolve())
        self.table = table
        self.macos = simulated_macos(table)
        if fallback_enabled is None:
            fallback_enabled = os.environ.get(FALLBACK_ENV, "").strip() not in ("", "0")
        self.fallback_enabled = fallback_enabled
        self.recording = True
        self.findings: dict[tuple, dict] = {}
        self.op_count = 0
        self.ops_seen: set[str] = set()
        self.upcast_ops: set[str] = set()
        self._infos: dict = {}
        self._files: dict[str, str | None] = {}
        self._lock = threading.Lock()
        # The simulator's own files (this package's) are never call sites.
        here = Path(__file__).resolve().parent
        self._own_files = {str(p) for p in here.glob("*.py")}
        self._torch_dir = str(Path(torch.__file__).resolve().parent)
        # The target torch (a table from lsync-port's shipped data), or None: the installed torch's own.
        self.target = table.get("target")
        self.judged_by_name: dict[str, str] = {}
        self._bases: dict[str, set[str]] | None = None
        self._rules: dict[str, list[dict]] = {}
        for base, rules in (table.get("dtype_rules") or {}).items():
            self._rules.setdefault(base, []).extend(dict(r, kind="dtype") for r in rules)
        for defect in table.get("defects") or []:
            for base in defect["ops"]:
                self._rules.setdefault(base, []).append(dict(defect, kind="numerics"))
        # Live bytes on the simulated device, by storage (data_ptr -> [bytes, wrappers alive]).
        self.current_op = "aten::_to_copy"
        self._storages: dict[int, list[int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.largest_buffer = {"bytes": 0, "op": None, "site": None}
        # Reads back to the host, copies between the device and the host, ops run on the CPU (stalls.py).
        self.stalls = StallCounter()

    # -- bookkeeping ----------------------------------------------------------------------

    @contextlib.contextmanager
    def paused(self):
        """Compute as usual but record nothing (the CPU reference run of verify's parity check)."""
        before = self.recording
        self.recording = False
        try:
            yield
        finally:
            self.recording = before

    def record(self, kind: str, level: str, op: str, message: str, **extra) -> None:
        if not self.recording:
            return
        site, function, stack = self._site()
        key = (kind, op, site, extra.get("dtype"))
        with self._lock:
            finding = self.findings.get(key)
            if finding is not None:
                finding["count"] += 1
                return
            self.findings[key] = {
                "kind": kind,
                "level": level,
                "op": op,
                "site": site,
                "function": function,
                "message": message,
                "count": 1,
                "stack": stack,
                **extra,
            }

    def watch_denoising(self, pipeline):
        """A context manager: count the stalls of `pipeline`'s denoising loop per step (stalls.watching)."""
        return watching(self.stalls, pipeline) if self.recording else contextlib.nullcontext()

    def watch_scheduler_class(self, scheduler_class):
        """A context manager: count per step for every instance of a scheduler class (stalls.watching_class)."""
        return watching_class(self.stalls, scheduler_class) if self.recording else contextlib.nullcontext()

    def stall(self, kind: str, op: str, nbytes: int = 0, direction: str | None = None) -> None:
        """A stall (see stalls.py) at the innermost call site inside the tree."""
        if not self.recording:
            return
        site, function, _ = self._site()
        with self._lock:
            via = None if site.startswith("(") else self._library_frame()
            self.stalls.add(kind, op, site, function, nbytes, direction, via=via)

    def _library_frame(self) -> str | None:
        """The innermost frame of a library (not torch, not the simulator) below the tree's call site:
        where the stall really is when the tree calls, say, a diffusers scheduler."""
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if self._relative(filename) is not None:
                return None
            if not filename.startswith((self._torch_dir, "<")) and filename not in self._own_files:
                parts = Path(filename).parts
                keep = parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
                return f"{'/'.join(keep)}:{frame.f_lineno} in {frame.f_code.co_name}"
            frame = frame.f_back
        return None

    def report(self) -> list[dict]:
        order = {"error": 0, "warning": 1}
        with self._lock:
            items = [dict(f) for f in self.findings.values()]
        return sorted(items, key=lambda f: (order.get(f["level"], 2), f["site"], f["kind"], f["op"]))

    def stats(self) -> dict:
        return {
            "ops": self.op_count,
            "distinct_ops": len(self.ops_seen),
            "ops_seen": sorted(self.ops_seen),
            "computed_in_float32": sorted(self.upcast_ops),
            "fallback_enabled": self.fallback_enabled,
            # The Mac the verdict models: its macOS (torch.backends.mps.is_macos_or_newer answers for it).
            "macos": ".".join(map(str, self.macos)),
            "min_macos": self.table.get("min_macos"),  # the oldest macOS the target torch's wheel installs on
            "mac_memory_bytes": SIMULATED_MAC_RAM,
            "torch": torch.__version__,
            "target_torch": self.target or {"version": self.table.get("torch"), "origin": "installed torch"},
            "table_counts": self.table.get("counts", {}),
            "judged_by_name": dict(sorted(self.judged_by_name.items())),
            "stalls": self.stalls.summary(),
            "memory": {
                "peak_bytes": self.peak_bytes,
                "live_bytes": self.live_bytes,
                "largest_buffer_bytes": self.largest_buffer["bytes"],
                "largest_buffer_op": self.largest_buffer["op"],
                "largest_buffer_site": self.largest_buffer["site"],
                "buffer_limit_bytes": METAL_BUFFER_LIMIT,
            },
        }

    # -- memory ---------------------------------------------------------------------------

    def track(self, elem: torch.Tensor) -> int:
        """A wrapper for `elem` was made: count its storage once, however many views share it."""
        try:
            storage = elem.untyped_storage()
            address, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return 0
        if not address:
            if not elem.is_meta:
                return 0
            address = storage._cdata  # a shadow's storage (see _checked_on_shadows): counted as the real one
        entry = self._storages.get(address)
        if entry is not None:
            entry[1] += 1
            return address
        self._storages[address] = [size, 1]
        self.live_bytes += size
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
        if size > self.largest_buffer["bytes"]:
            site = self._site()[0] if self.recording else None
            self.largest_buffer = {"bytes": size, "op": self.current_op, "site": site}
        if size > METAL_BUFFER_LIMIT:
            self.record(
                "memory",
                "error",
                self.current_op,
                f"one tensor of {size} bytes ({size / 2**30:.2f} GiB) on the device: a Metal buffer holds at most "
                f"2**32 bytes (4 GiB), and MPS fails with `total bytes of NDArray > 2**32` (a failed assertion that "
                "aborts the process). Split the work (chunk the batch, the frames or the attention).",
                summary=f"one {size / 2**30:.2f} GiB buffer: over Metal's 2**32-byte limit, MPS aborts",
                bytes=size,
            )
        return address

    def untrack(self, address: int) -> None:
        entry = self._storages.get(address) if address else None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._storages[address]
            self.live_bytes -= entry[0]

    def _relative(self, filename: str) -> str | None:
        cached = self._files.get(filename, False)
        if cached is not False:
            return cached
        relative = None
        try:
            resolved = Path(filename).resolve()
            if str(resolved) not in self._own_files:
                relative = resolved.relative_to(self.tree).as_posix()
        except (ValueError, OSError):
            relative = None
        self._files[filename] = relative
        return relative

    def _site(self) -> tuple[str, str, list[str]]:
        """The innermost frame inside the tree (file:line), its function, and up to 4 tree frames."""
        frame = sys._getframe(2)
        inside: list[tuple[str, str]] = []
        fallback = None
        while frame is not None and len(inside) < 4:
            filename = frame.f_code.co_filename
            relative = self._relative(filename)
            if relative is not None:
                inside.append((f"{relative}:{frame.f_lineno}", frame.f_code.co_name))
            elif (
                fallback is None
                and not filename.startswith(self._torch_dir)
                and filename not in self._own_files
                and not filename.startswith("<")
            ):
                fallback = (f"{filename}:{frame.f_lineno}", frame.f_code.co_name)
            frame = frame.f_back
        if inside:
            return inside[0][0], inside[0][1], [f"{s} in {f}" for s, f in inside]
        if fallback is not None:
            return f"(outside the tree) {fallback[0]}", fallback[1], []
        return "(unknown)", "", []

    def _info(self, func) -> _OpInfo:
        info = self._infos.get(func)
        if info is None:
            info = _OpInfo(func, self.table)
            if info.status == "unknown" and self.target is not None:
                info.status = self._absent_status(info.name)
            info.rules = self._rules.get(info.name.split("::", 1)[-1].split(".", 1)[0], [])
            self._infos[func] = info
        return info

    def _absent_status(self, name: str) -> str:
        """An op of the installed torch that the target torch's yaml lacks. Another overload of the same
        name in the target, all of one status: judged by that (listed in the stats, `judged_by_name`).
        Otherwise ABSENT: a warning, since on the target this code path reaches other ops."""
        if self._bases is None:
            self._bases = {}
            for known, status in self.table["ops"].items():
                self._bases.setdefault(known.split(".", 1)[0], set()).add(status)
        statuses = self._bases.get(name.split(".", 1)[0])
        if statuses and len(statuses) == 1:
            status = next(iter(statuses))
            self.judged_by_name[name] = f"{name.split('.', 1)[0]} ({status})"
            return status
        return ABSENT

    # -- the checks -----------------------------------------------------------------------

    def check_op(self, info_name: str, status: str) -> None:
        if status in (KERNEL, IMPLICIT, EXPLICIT, "other", "unknown"):
            return
        op = info_name.split("::", 1)[-1]
        if status == ABSENT:
            target = self.table.get("torch")
            self.record(
                "op",
                "warning",
                info_name,
                f"The operator '{info_name}' is not in torch {target}'s native_functions.yaml: the installed torch "
                f"({torch.__version__}) has it, so on {target} this code reaches other ops, which the simulator "
                "cannot see. Judge it on a Mac with that torch, or run verify with a --target-torch that has it.",
                summary=f"not in torch {target}: cannot be judged for it (the installed torch has it)",
            )
            return
        if status == BOXED or fallback_rescues(status):
            self.stall(CPU, info_name)
        if status == BOXED:
            shown = info_name.replace("aten::_linalg_svd", "aten::linalg_svd")
            self.record(
                "op",
                "warning",
                info_name,
                f"The operator '{shown}' runs on the CPU through the CPU fallback that MPS registers for it "
                "(correct, but it copies to the CPU and back).",
                summary="runs on the CPU through MPS's own fallback for it (correct, slower)",
                fallback=True,
            )
            return
        rescued = fallback_rescues(status)
        inner = self.table.get("inner", {}).get(info_name)
        missing = inner or info_name
        message = (
            f"The operator '{missing}' is not currently implemented for the MPS device."
            + (f" (reached through {info_name}, whose composite kernel calls it.)" if inner else "")
            + " As a temporary fix, you can set the environment variable `PYTORCH_ENABLE_MPS_FALLBACK=1` "
            "to use the CPU as a fallback for this op. WARNING: this will be slower than running natively on MPS."
        )
        if status == MISSING_NO_CPU:
            message += f" The fallback cannot rescue it: {op} has no CPU kernel either."
        elif status == MISSING_VIEW:
            message += f" The fallback cannot rescue it properly: {op} is a view op, and the fallback returns a copy."
        level = "warning" if (rescued and self.fallback_enabled) else "error"
        through = f" (its kernel calls {missing}, which has none)" if inner else ""
        if level == "warning":
            message = (
                f"The operator '{missing}' has no MPS kernel; {FALLBACK_ENV}=1 is set, so it runs on the CPU (slower)."
            )
            summary = f"no MPS kernel{through}; {FALLBACK_ENV}=1 is set: runs on the CPU (slower)"
        elif rescued:
            summary = f"no MPS kernel{through}: NotImplementedError; {FALLBACK_ENV}=1 would run it on the CPU"
        elif status == MISSING_VIEW:
            summary = f"no MPS kernel; {FALLBACK_ENV}=1 gives a copy, not a view"
        else:
            summary = f"no MPS kernel and no CPU kernel: nothing runs it ({FALLBACK_ENV}=1 cannot help)"
        self.record("op", level, info_name, message, summary=summary, fallback=rescued)

    def check_rules(self, info: _OpInfo, args, kwargs) -> None:
        """The target torch's own MPS expectations for this op x dtype, and known Metal numerics defects.
        The dtype is that of the op's first tensor input, as torch's OpInfo tests key them."""
        first = next(_tensors(args, kwargs), None)
        if first is None:
            return
        dtype = str(first.dtype).removeprefix("torch.")
        target = self.table.get("torch")
        for rule in info.rules:
            if rule["dtypes"] is not None and dtype not in rule["dtypes"]:
                continue
            if rule["kind"] == "numerics":
                self.record(
                    "numerics",
                    rule["level"],
                    info.name,
                    f"{rule['summary']}. A known Metal numerics defect ({rule['id']}), affecting torch "
                    f"{rule['torch']}: MPS computes it without an error and the result is wrong. "
                    f"Source: {rule['source']}",
                    summary=rule["summary"],
                    dtype=dtype,
                    source=rule["source"],
                )
                continue
            unsupported = rule["level"] == "error"
            every = rule["dtypes"] is None
            what = (
                f"not implemented on MPS in {dtype}"
                if unsupported
                else "unsupported on MPS for some inputs (every dtype)"
                if rule["list"] == "UNIMPLEMENTED_XFAILLIST"
                else f"expected to fail on MPS in {'every dtype' if every else dtype} (an error or a wrong result)"
            )
            self.record(
                "dtype",
                rule["level"],
                info.name,
                f"torch {target}'s own MPS tests list '{rule['key']}' as {what} "
                f"({rule['list']} in torch/testing/_internal/common_mps.py).",
                summary=f"torch {target}'s MPS tests: {what}",
                dtype=dtype,
                expectation=rule["key"],
            )

    def check_created(self, op: str, tensor: torch.Tensor) -> None:
        dtype = tensor.dtype
        if dtype is torch.float64:
            summary = "float64 on the device: TypeError, MPS has no float64"
            self.record("dtype", "error", op, f"TypeError: {FLOAT64_ERROR}", summary=summary, dtype="float64")
        elif dtype is torch.complex128:
            summary = "complex128 on the device: MPS has none"
            self.record("dtype", "error", op, f"TypeError: {COMPLEX128_ERROR}", summary=summary, dtype="complex128")
        elif dtype is torch.bfloat16:
            summary = "bfloat16 on the device: needs macOS 14"
            self.record("dtype", "warning", op, BFLOAT16_WARNING, summary=summary, dtype="bfloat16")

    def check_generator(self, op: str, generator, on_mps: bool) -> None:
        if generator is None or not isinstance(generator, _BaseGenerator):
            return
        generator_mps = _generator_is_mps(generator)
        if on_mps and not generator_mps:
            kind = _BaseGenerator.device.__get__(generator).type
            self.record(
                "generator",
                "error",
                op,
                f"RuntimeError: Expected a 'mps' device type for generator but found '{kind}' "
                "(a CPU generator drawing on the mps device; draw on the CPU and move the result, "
                "or use torch.Generator(device='mps'))",
                summary=f"a {kind} generator draws on mps: RuntimeError",
            )
        elif not on_mps and generator_mps:
            self.record(
                "generator",
                "error",
                op,
                "RuntimeError: Expected a 'cpu' device type for generator but found 'mps' "
                "(an mps generator drawing on the CPU)",
                summary="an mps generator draws on the CPU: RuntimeError",
            )

    def check_mixing(self, op: str, args, kwargs) -> None:
        if op in _MIXING_ALLOWED:
            return
        for value in _tensors(args, kwargs):
            if type(value) is not MPSSimTensor and not isinstance(value, MPSSimTensor) and value.dim() > 0:
                if value.device.type == "cpu":
                    self.record(
                        "device",
                        "error",
                        op,
                        "RuntimeError: Expected all tensors to be on the same device, but found at least two "
                        f"devices, mps:0 and cpu! (a CPU tensor of shape {tuple(value.shape)} is an argument of {op})",
                        summary=f"a CPU tensor {tuple(value.shape)} meets mps tensors: RuntimeError",
                    )
                    return

    # -- dispatch -------------------------------------------------------------------------

    def dispatch(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        simulated = False  # an argument lives on the simulated device
        for value in args:
            kind = type(value)
            if kind is MPSSimTensor or (
                (kind is list or kind is tuple) and any(type(v) is MPSSimTensor for v in value)
            ):
                simulated = True
                break
        if not simulated:
            for value in kwargs.values():
                if type(value) is MPSSimTensor:
                    simulated = True
                    break
        device = kwargs.get("device")
        on_mps = _is_mps(device) if device is not None else simulated  # where the op's output lives
        generator = kwargs.get("generator")
        if not on_mps and not simulated:
            if generator is not None and _generator_is_mps(generator):
                self.check_generator(self._info(func).name, generator, False)
            return func(*args, **kwargs)

        info = self._info(func)
        self.op_count += 1
        self.ops_seen.add(info.name)
        self.current_op = info.name
        if info.status not in (KERNEL, IMPLICIT, EXPLICIT):
            self.check_op(info.name, info.status)
        if info.rules and self.recording:
            self.check_rules(info, args, kwargs)
        if info.readback:
            self.stall(READBACK, info.name, _nbytes(args[0]) if args else 0)
        elif info.name in _COPY_OPS and self.recording:
            self._count_copy(info.name, args, kwargs, on_mps)
        if device is None:
            self.check_mixing(info.name, args, kwargs)
        if generator is not None:
            self.check_generator(info.name, generator, on_mps)
        cpu_args = _unwrap(args)
        cpu_kwargs = {k: _unwrap(v) for k, v in kwargs.items()} if kwargs else kwargs
        try:
            if func is _BADDBMM and cpu_kwargs.get("beta", 1) == 0 and _has_half(cpu_args):
                # beta=0: the input is not read, and diffusers' attention passes an empty one the size of
                # the scores; upcasting it cost as much as the product (732 against 325 ms, 32x1024x1024).
                product = _BMM(cpu_args[1].float(), cpu_args[2].float())
                out = product.mul_(cpu_kwargs.get("alpha", 1)).to(cpu_args[1].dtype)
            elif _computes_in_float32(func, cpu_args):
                out = self._upcast_call(func, info, cpu_args, cpu_kwargs, missing=False)
            else:
                out = func(*cpu_args, **cpu_kwargs)
        except RuntimeError as error:
            if not _HALF_MISSING.search(str(error)):
                raise
            out = self._upcast_call(func, info, cpu_args, cpu_kwargs)
        if not on_mps:
            return out  # an explicit device="cpu" (zeros_like(x, device="cpu"), _to_copy to the CPU)
        out = _wrap(out)
        if info.write_returns and any(info.write_returns):
            out = self._return_mutated(info, args, kwargs, out)
        if info.inplace_view:
            self._fix_inplace_view(func, args, kwargs)
        if self.recording:
            self._check_outputs(info.name, args, kwargs, out)
        return out

    def _count_copy(self, op, args, kwargs, on_mps) -> None:
        """A copy op with one side on the host: copy_(dst, src), _to_copy(src, device=...)."""
        if op == "aten::_to_copy":
            source, target_mps = args[0] if args else kwargs.get("self"), on_mps
        else:
            if len(args) < 2:
                return
            source, target_mps = args[1], isinstance(args[0], MPSSimTensor)
        if not isinstance(source, torch.Tensor) or isinstance(source, MPSSimTensor) == target_mps:
            return
        self.stall(COPY, op, _nbytes(source), TO_DEVICE if target_mps else TO_HOST)

    def _check_outputs(self, op, args, kwargs, out) -> None:
        outputs = out if isinstance(out, (list, tuple)) else (out,)
        for value in outputs:
            if not isinstance(value, MPSSimTensor):
                continue
            dtype = value.dtype
            if dtype is torch.float64 or dtype is torch.complex128 or dtype is torch.bfloat16:
                # Reported where such a tensor first appears on the device, not on every later op.
                if not any(isinstance(t, MPSSimTensor) and t.dtype is dtype for t in _tensors(args, kwargs)):
                    self.check_created(op, value)

    def _return_mutated(self, info, args, kwargs, out):
        if len(info.write_returns) == 1:
            where = info.write_returns[0]
            return _argument(args, kwargs, where) if where is not None else out
        values = list(out) if isinstance(out, (list, tuple)) else [out]
        for index, where in enumerate(info.write_returns):
            if where is not None and index < len(values):
                values[index] = _argument(args, kwargs, where)
        return type(out)(values) if isinstance(out, (list, tuple)) else values[0]

    @staticmethod
    def _fix_inplace_view(func, args, kwargs) -> None:
        """transpose_, squeeze_, unsqueeze_, as_strided_...: the op changed `elem`'s metadata; change
        the wrapper's the same way, by running the op on the wrapper as a Meta op (the trick
        torch.utils._python_dispatch.return_and_correct_aliasing uses)."""
        with torch.utils._mode_utils.no_dispatch():
            meta = torch._C._meta_in_tls_dispatch_include()
            torch._C._set_meta_in_tls_dispatch_include(True)
            try:
                func(*args, **kwargs)
            finally:
                torch._C._set_meta_in_tls_dispatch_include(meta)

    def _upcast_call(self, func, info, cpu_args, cpu_kwargs, missing=True):
        """Compute in float32 and cast back: the CPU has no Half/BFloat16 kernel for this op
        (`missing`, listed in the stats), or its float16 kernel is slow (_FLOAT32_COMPUTE)."""
        if missing:
            self.upcast_ops.add(info.name)
        low = [None]

        def up(value):
            if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
                low[0] = value.dtype
                return value.float()
            if type(value) in (list, tuple):
                return type(value)(up(v) for v in value)
            return value

        up_args = tuple(up(a) for a in cpu_args)
        up_kwargs = {k: up(v) for k, v in cpu_kwargs.items()}
        out = func(*up_args, **up_kwargs)
        for where in info.mutated:
            original = _argument(cpu_args, cpu_kwargs, where)
            computed = _argument(up_args, up_kwargs, where)
            if isinstance(original, torch.Tensor) and computed is not original:
                original.copy_(computed)

        def down(value):
            if isinstance(value, torch.Tensor) and value.dtype is torch.float32 and low[0] is not None:
                return value.to(low[0])
            if type(value) in (list, tuple):
                return type(value)(down(v) for v in value)
            return value

        out = down(out)
        if info.write_returns and any(info.write_returns):
            values = list(out) if isinstance(out, (list, tuple)) else [out]
            for index, where in enumerate(info.write_returns):
                if where is not None and index < len(values):
                    values[index] = _argument(cpu_args, cpu_kwargs, where)
            out = type(out)(values) if isinstance(out, (list, tuple)) else values[0]
        return out

    # -- Python-level entry points ------------------------------------------------------------

    def to_device(self, tensor: torch.Tensor, dtype=None, copy=False, memory_format=None) -> MPSSimTensor:
        """A CPU tensor moved to the simulated device."""
        if isinstance(tensor, MPSSimTensor):
            return self.tensor_to(tensor, (), {"dtype": dtype, "copy": copy})
        options = {"dtype": dtype} if dtype is not None else {}
        if memory_format is not None:
            options["memory_format"] = memory_format
        self.current_op = "aten::_to_copy"
        with torch.no_grad():
            elem = _ORIGINALS["Tensor.to"](tensor.detach(), "cpu", copy=True, **options)
        out = MPSSimTensor(elem)
        if self.recording:
            self.check_created("aten::_to_copy", out)
            self.stall(COPY, "aten::_to_copy", _nbytes(elem), TO_DEVICE)
        return out

    def tensor_to(self, tensor: MPSSimTensor, args, kwargs):
        args, parsed, copy = _split_copy(args, kwargs)
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **parsed)
        if device is not None and not _is_mps(device):
            if not _is_cpu(device):
                return _ORIGINALS["Tensor.to"](tensor.elem, *args, **kwargs)  # cuda: the real error
            options = {"dtype": dtype} if dtype is not None else {}
            if memory_format is not None:
                options["memory_format"] = memory_format
            out = _ORIGINALS["Tensor.to"](tensor.elem, "cpu", copy=True, **options)
            self.stall(COPY, "aten::_to_copy", _nbytes(out), TO_HOST)
            return out
        if dtype is None or dtype == tensor.dtype:
            if not copy and memory_format in (None, torch.preserve_format):
                return tensor
        options = {}
        if dtype is not None:
            options["dtype"] = dtype
        if memory_format is not None:
            options["memory_format"] = memory_format
        self.current_op = "aten::_to_copy"
        out = MPSSimTensor(_ORIGINALS["Tensor.to"](tensor.elem, copy=True, **options))
        self.op_count += 1
        if self.recording and out.dtype != tensor.dtype:
            self.check_created("aten::_to_copy", out)
        return out

    def numpy(self, tensor: MPSSimTensor, force: bool):
        if not force:
            summary = ".numpy() of an mps tensor: TypeError (call .cpu() first)"
            self.record("device", "error", "Tensor.numpy", f"TypeError: {NUMPY_ERROR}", summary=summary)
        self.stall(COPY, "Tensor.numpy", _nbytes(tensor), TO_HOST)
        return tensor.elem.detach().numpy()

    def tolist(self, tensor: MPSSimTensor):
        self.stall(READBACK, "Tensor.tolist", _nbytes(tensor))
        return tensor.elem.tolist()

    def new_tensor(self, tensor, data, dtype, device):
        if device is not None and not _is_mps(device):
            return _ORIGINALS["Tensor.new_tensor"](tensor.elem, data, dtype=dtype, device=device)
        elem = _ORIGINALS["Tensor.new_tensor"](tensor.elem, data, dtype=dtype)
        out = MPSSimTensor(elem)
        if self.recording:
            self.check_created("aten::new_tensor", out)
            self.stall(COPY, "aten::new_tensor", _nbytes(elem), TO_DEVICE)
        return out

    def getitem(self, tensor: MPSSimTensor, index):
        self.op_count += 1
        self.current_op = "aten::index"
        if _has_bool_mask(index):  # MPS turns a boolean mask into indices with nonzero: a sync
            self.stall(READBACK, "aten::index (boolean mask)", _nbytes(tensor))
        return _wrap(tensor.elem[_unwrap_index(index)])

    def setitem(self, tensor: MPSSimTensor, index, value) -> None:
        self.op_count += 1
        source = value.elem if isinstance(value, MPSSimTensor) else value
        if _has_bool_mask(index):
            self.stall(READBACK, "aten::index_put_ (boolean mask)", _nbytes(tensor))
        if isinstance(value, torch.Tensor) and not isinstance(value, MPSSimTensor) and value.dim() > 0:
            self.stall(COPY, "aten::index_put_", _nbytes(value), TO_DEVICE)
        if isinstance(source, torch.Tensor) and source.dtype is torch.float64 and tensor.dtype is not torch.float64:
            source = source.to(tensor.dtype)
        tensor.elem[_unwrap_index(index)] = source

    def sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """F.scaled_dot_product_attention as MPS runs it (torch's attention.cpp, SDPBackend::math on MPS)."""
        tensors = [t for t in (query, key, value, attn_mask) if t is not None]
        if not any(isinstance(t, MPSSimTensor) for t in tensors):
            return _ORIGINALS["sdpa"](
                query,
                key,
                value,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
            )
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        contiguous = all(t.is_contiguous() for t in (query, key, value))
        macos_15 = self.macos >= (15, 0)
        fused = "aten::_scaled_dot_product_attention_math_for_mps" in self.table["ops"]  # torch 2.5 and later
        if fused and dropout_p == 0.0 and not needs_grad and (contiguous or macos_15):
            op = "aten::_scaled_dot_product_attention_math_for_mps"
            self.current_op = op
            self.op_count += 1
            self.ops_seen.add(op)
            self.check_op(op, self.table["ops"].get(op, "unknown"))
            mixed = [t for t in tensors if not isinstance(t, MPSSimTensor) and t.dim() > 0]
            if mixed:
                self.record(
                    "device",
                    "error",
                    op,
                    "RuntimeError: Expected query, key, and value to have the same device type, but got "
                    + ", ".join(
                        f"{n}.device: {t.device}" for n, t in zip(("query", "key", "value"), tensors[:3], strict=True)
                    ),
                    summary="a CPU tensor among the attention inputs: RuntimeError",
                )
            out = _ORIGINALS["sdpa"](
                _unwrap(query),
                _unwrap(key),
                _unwrap(value),
                attn_mask=_unwrap(attn_mask),
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
            )
            return _wrap(out)
        # The composite math path, op by op (every op checked by dispatch).
        mask = attn_mask
        if mask is not None and mask.dtype is torch.bool:
            mask = torch.zeros_like(mask, dtype=query.dtype).masked_fill_(mask.logical_not(), float("-inf"))

        def math_path(q, k, v, m):
            return torch.ops.aten._scaled_dot_product_attention_math.default(
                q, k, v, m, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa
            )[0]

        tensors = (query, key, value, mask)
        if dropout_p == 0.0 and _fits_float16(query, key, mask, scale) and self._checked_on_shadows(math_path, tensors):
            # The values: the CPU's fused kernel, in float32 (rounded back to float16 where the inputs
            # were), which computes the same attention without materialising the scores (the math path's
            # (batch, heads, tokens, tokens) softmax was most of a real 1.0 or 1.5 mps-sim verify).
            low = query.dtype
            up = [None if t is None else _unwrap(t).float() for t in tensors]
            out = _ORIGINALS["sdpa"](
                up[0], up[1], up[2], attn_mask=up[3], is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
            )
            return _wrap(out.to(low))
        return math_path(query, key, value, mask)

    def _checked_on_shadows(self, run, tensors) -> bool:
        """Run `run` (the attention's math path) on shadows of `tensors`: simulated tensors whose data is a
        meta tensor of the same shape, strides and dtype. Every op goes through dispatch as it would with
        data (statuses, dtype rules, buffer sizes: the checks read no values) and nothing is computed.
        False, with nothing recorded, when the shadows cannot stand in (a CPU tensor among the inputs,
        inputs of different dtypes, an op without a meta kernel)."""
        given = [t for t in tensors if t is not None]
        if not all(type(t) is MPSSimTensor and t.dtype is given[0].dtype for t in given):
            return False
        if given[0].dtype not in (torch.float32, torch.float16):
            return False
        saved = (
            {key: dict(value) for key, value in self.findings.items()},
            self.op_count,
            set(self.ops_seen),
            dict(self.largest_buffer),
            self.peak_bytes,
        )
        try:
            run(*(None if t is None else self._shadow(t) for t in tensors))
        except (RuntimeError, NotImplementedError, TypeError):
            self.findings, self.op_count, self.ops_seen, self.largest_buffer, self.peak_bytes = saved
            return False
        return True

    def _shadow(self, tensor: MPSSimTensor) -> MPSSimTensor:
        """A simulated tensor like `tensor`, holding no data; its own bytes are not counted twice."""
        elem = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device="meta")
        shadow = MPSSimTensor(elem)
        self.untrack(shadow.__dict__.pop("_sim_storage", 0))
        return shadow


def _fits_float16(query, key, mask, scale) -> bool:
    """Whether a float16 math path cannot overflow, so that the fused float32 kernel computes what it
    would: every score |q.k| * scale is at most max|q| * max|k| * scale (Cauchy-Schwarz), and with the
    mask's largest finite value it stays under float16's 65504; the softmax and its product with v
    cannot exceed that. Float32 always fits. Otherwise the math path runs op by op, and overflows as MPS does."""
    if query.dtype is not torch.float16:
        return True
    q, k = _unwrap(query).float(), _unwrap(key).float()
    factor = scale if scale is not None else q.size(-1) ** -0.5
    bound = float(q.norm(dim=-1).amax()) * float(k.norm(dim=-1).amax()) * factor
    if mask is not None:
        finite = _unwrap(mask).float()
        finite = finite[torch.isfinite(finite)]
        bound += float(finite.abs().amax()) if finite.numel() else 0.0
    return bound < torch.finfo(torch.float16).max


def _unwrap_index(index):
    kind = type(index)
    if kind is tuple or kind is list:
        return kind(_unwrap_index(i) for i in index)
    if isinstance(index, MPSSimTensor):
        return index.elem
    return index


def _tensors(args, kwargs):
    for value in args:
        if isinstance(value, torch.Tensor):
            yield value
        elif type(value) in (list, tuple):
            for inner in value:
                if isinstance(inner, torch.Tensor):
                    yield inner
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            yield value
        elif type(value) in (list, tuple):
            for inner in value:
                if isinstance(inner, torch.Tensor):
                    yield inner


def _split_copy(args, kwargs):
    """Tensor.to's `copy`, which torch._C._nn._parse_to does not take: by keyword, or positional after
    non_blocking (`to(dtype, non_blocking, copy)`, `to(device, dtype, non_blocking, copy)`)."""
    copy = bool(kwargs.get("copy", False))
    kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
    if len(args) >= 2 and isinstance(args[-1], bool) and isinstance(args[-2], bool):
        copy, args = args[-1], args[:-1]
    return args, kwargs, copy


# torch's own functions, saved by hooks.install() before it replaces them.
_ORIGINALS: dict = {}
