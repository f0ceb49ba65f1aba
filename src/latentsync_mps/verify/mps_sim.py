"""A simulated MPS device: run a tree's MPS code path on a machine without a Mac, and check every op.

Used by `lsync-port verify TREE --device mps-sim`. Standalone on purpose: the verify harness loads
this file by path, inside the child process that runs the tree under the tree's own interpreter,
which need not have lsync-port installed. It imports nothing from lsync-port.

What it does, once `install(tree)` has run (before the tree's modules are imported):

* The device answers as mps wherever code can look: `torch.backends.mps.is_available()` and
  `is_built()` are True, the macOS version answers as 15.0, `torch.mps.*` calls work (only those of
  the target torch, for the tree's code: `_model_target_api`), and
  tensors moved or created on "mps" report `device.type == "mps"` (device `mps:0`). They are
  `MPSSimTensor`s: wrapper tensors (`torch.Tensor._make_wrapper_subclass`) whose data is an
  ordinary CPU tensor (`.elem`); every aten op on them is computed on the CPU.
* Every aten op that would run on the device goes through `Simulator.dispatch` (a
  `TorchDispatchMode` plus the subclass's own `__torch_dispatch__`), which checks it against the
  MPS rules of the *target* torch before computing it: the table `install(table=...)` is given
  (lsync-port's shipped data for the torch the tree pins for macOS, written by verify), else the
  installed torch's own (`build_support_table`). An op the installed torch has and the target's yaml
  lacks is judged by the other overloads of its name when they agree, else it is a warning (ABSENT):

  1. op coverage: the op has no MPS kernel in this torch (see `build_support_table`): an error
     finding, with the real MPS message and whether `PYTORCH_ENABLE_MPS_FALLBACK=1` would rescue
     it (see `fallback_rescues`). When that variable is set to 1 in verify's environment, an op it
     rescues is a warning (it runs, on the CPU). Ops with a CPU fallback that MPS registers
     itself (`linalg_svd`, `embedding_renorm_`, `col2im` when it lacks a kernel) are warnings.
     Composite-implicit ops are judged by the ops they decompose into, composite-explicit ops
     at their own level (convolution, for instance, is judged at `aten::convolution`, which on
     MPS routes to `_mps_convolution`; the CPU-internal mkldnn kernels are never looked at),
     except those whose composite kernel calls an out= variant that has no MPS kernel
     (`linalg_lstsq`, `logspace`, `frexp`): those are findings. `scaled_dot_product_attention`
     is intercepted before its C++ dispatch (which on a Linux build would pick CPU-only flash
     kernels) and judged as MPS would run it: `_scaled_dot_product_attention_math_for_mps` when
     dropout is 0, no input needs a gradient and q/k/v are contiguous (or macOS 15), else the
     composite math path, op by op.
  2. dtype: a float64 (or complex128) tensor created on the device is an error finding carrying
     the real MPS error text; bfloat16 is a warning (needs macOS 14; emulated on M1/M2).
  3. device mismatch: an op mixing simulated-mps tensors with CPU tensors of one dimension or
     more is an error finding (real MPS raises there); 0-dim CPU tensors (scalars), CPU index
     tensors and copies between devices are allowed, as on MPS. `.numpy()` on an mps tensor is
     an error finding too.
  4. generators: drawing on the device with a CPU generator, or on the CPU with an mps
     generator, is an error finding. `torch.Generator(device="mps")` gives a CPU generator that
     answers `device == mps:0`.
  5. op x dtype (target tables only): torch's own MPS expectations of that release
     (`dtype_rules`, from common_mps.py) for the dtype of the op's first tensor input, and the
     known Metal numerics defects (`defects`, a hand-curated table): error or warning findings.
  6. memory: live bytes on the device are counted per storage (views share one), with the peak
     and the largest buffer (`stats()["memory"]`); a buffer over 2**32 bytes is an error finding.

  A finding does not stop the run (the op is computed anyway), so one run lists every defect it
  reaches; each records the op and the Python call site: the innermost frame inside the tree
  (file:line), deduplicated by (kind, op, site, dtype) with a count.
* Half precision: the CPU computes float16 ops itself (torch 2.x has CPU Half kernels for most
  ops). An op whose CPU kernel lacks Half (or bfloat16) is computed in float32 and cast back, so
  the run goes on; that is the simulator's doing, not a finding (the stats list such ops). A few
  ops whose CPU float16 kernels are many times slower than float32 (`_FLOAT32_COMPUTE`:
  convolution, grid_sample, gelu, silu, group_norm) are computed in float32 and rounded to
  float16 too, as a float16 kernel that accumulates in float32 would.
* Entry points that on a Linux build reach an MPS device guard in C++ before any dispatch
  (`Tensor.to`, `torch.tensor(..., device=)`, indexing, `contiguous`, `copy_`, `torch.load`'s
  `map_location`, ...) are handled in Python: see `MPSSimTensor` and `install`.

What it cannot see: numerical bugs of Metal kernels beyond the listed defects (results are the
CPU's), out-of-memory and the allocator's caching, speed, and macOS-version gaps beyond those
modelled here (float64, complex128, bfloat16, the macOS 15 SDPA route); dtype gaps of individual MPS
kernels that torch's own expectations do not list; ops inside a composite-explicit kernel other
than the out= variants above; ops on tensors that never reach the device. Autograd is off while
it runs (torch.set_grad_enabled(False)) and tensors on the simulated device never require grad:
training code paths are out of scope.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import threading
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SUPPORT_VERSION = "2"
MPS_DEVICE = torch.device("mps", 0)
CPU_DEVICE = torch.device("cpu")
# The macOS the simulated machine answers with (torch.backends.mps.is_macos_or_newer): 15, so SDPA on
# strided q/k/v takes MPS's fused route as on current Macs. bfloat16 (macOS 14) is still a warning.
SIMULATED_MACOS = (15, 0)

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

# Status of an aten overload on MPS, as `build_support_table` derives it from the yaml.
KERNEL = "mps"  # an MPS kernel (directly or through its structured delegate)
IMPLICIT = "composite-implicit"  # decomposes into other ops before any backend sees it
EXPLICIT = "composite-explicit"  # one kernel for every backend, which calls other ops
BOXED = "cpu-fallback"  # MPS registers a boxed CPU fallback for it: runs, on the CPU
MISSING = "missing"  # no MPS kernel; PYTORCH_ENABLE_MPS_FALLBACK=1 runs it on the CPU
MISSING_NO_CPU = "missing-no-cpu"  # no MPS kernel and no CPU kernel: nothing rescues it
MISSING_VIEW = "missing-view"  # a view op without MPS kernel: the fallback returns a copy
MISSING_INNER = "composite-explicit-missing-out"  # its kernel calls an out= op with no MPS kernel
# Not in the target torch's yaml at all (the installed torch, newer, has it): see Simulator._absent_status.
ABSENT = "absent-in-target"
# Metal's limit for one buffer: MPS asserts "total bytes of NDArray > 2**32" (and aborts) beyond it.
METAL_BUFFER_LIMIT = 2**32

# Boxed CPU fallbacks registered for MPS outside native_functions.yaml (aten/src/ATen/mps/MPSFallback.mm).
# linalg_svd is composite-implicit in the yaml, so a Linux build decomposes it into _linalg_svd before
# the simulator sees it: _linalg_svd stands for it.
BOXED_FALLBACKS = (
    "aten::linalg_svd",
    "aten::linalg_svd.U",
    "aten::_linalg_svd",
    "aten::_linalg_svd.U",
    "aten::embedding_renorm_",
    "aten::col2im",
)
# Composite-explicit ops whose functional kernel does not go through the out= variant it is grouped with.
NOT_THROUGH_OUT = ("aten::narrow_copy",)


def fallback_rescues(status: str) -> bool:
    """Whether `PYTORCH_ENABLE_MPS_FALLBACK=1` makes an op of this status run.

    The rule, from torch's aten/src/ATen/mps/MPSFallback.mm and native/CPUFallback.cpp: without the
    variable, MPS registers an error fallback for every op that has no MPS kernel ("The operator
    'aten::X' is not currently implemented for the MPS device..."); with it set to 1 when torch is
    loaded, the boxed `cpu_fallback` instead: it copies every tensor argument (and a `device`
    argument, so factories too) to the CPU, redispatches the op to its CPU kernel, copies mutated
    inputs back and moves the outputs to the first tensor argument's device. So it rescues any op
    that has a CPU kernel, except that a view op's output becomes a copy on the device (torch warns:
    the storage cannot be shared across devices), which silently breaks code that writes through
    the view. An op with no CPU kernel either (CUDA-only kernels such as the flash-attention ops)
    fails on the CPU instead. The variable is read once, when torch is loaded: setting it later in
    the process changes nothing.
    """
    return status in (MISSING, MISSING_INNER)


def _yaml_path() -> Path | None:
    try:
        import torchgen
    except ImportError:
        return None
    path = Path(torchgen.__file__).parent / "packaged" / "ATen" / "native" / "native_functions.yaml"
    return path if path.exists() else None


_RETURN_ALIAS = re.compile(r"\((\w+)\)")
_MPS_LIBRARY = re.compile(
    r"""(\w+)\s*=\s*torch\.library\.Library\(\s*["']aten["']\s*,\s*["']IMPL["']\s*,\s*["']MPS["']\s*\)"""
)


def python_mps_kernels(texts) -> set[str]:
    """Overload names (`linalg_lu_solve.out`) that torch's own Python files register MPS kernels for:
    `lib = torch.library.Library("aten", "IMPL", "MPS")` then `lib.impl("aten::name.overload", fn)`."""
    found: set[str] = set()
    for text in texts:
        for library in set(_MPS_LIBRARY.findall(text)):
            pattern = re.escape(library) + r"""\.impl\(\s*["'](?:aten::)?([\w.]+)["']"""
            found.update(re.findall(pattern, text))
    return found


def _installed_torch_sources():
    """The installed torch's Python files that can register an MPS kernel (they name "MPS")."""
    for path in Path(torch.__file__).resolve().parent.rglob("*.py"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = path.read_text(encoding="utf-8")
            if "MPS" in text and "IMPL" in text:
                yield text



def build_support_table(
    yaml_text: str | None = None,
    torch_version: str | None = None,
    source: str | None = None,
    python_kernels: set[str] | None = None,
) -> dict:
    """Which aten overloads have an MPS kernel, from a torch release's native_functions.yaml (the one
    torchgen ships inside every torch wheel): the installed torch's by default, or `yaml_text` read
    from another release's wheel (scripts/derive_mps_tables.py: one implementation serves both).

    Rules (those of torchgen's parse_native_yaml): an entry with neither `dispatch` nor
    `structured_delegate` is CompositeImplicitAutograd; a structured op's kernels are those of its
    `structured_delegate` (the out= op); `dispatch` keys are comma-separated lists; `autogen`
    entries are generated with CompositeExplicitAutograd kernels (for a composite-implicit op, only
    when it is tagged core). On torch 2.13.0 this gives torchgen's own answer for all 3101
    overloads: 890 with an MPS kernel, 738 composite-implicit, 1109 composite-explicit, 364
    without an MPS kernel (before the adjustments below). An op that has no
    MPS kernel and is neither composite is MISSING (or MISSING_NO_CPU / MISSING_VIEW); a
    composite-explicit functional op whose out= variant (same signature) has no MPS, CPU-less
    composite or composite kernel is MISSING_INNER (its kernel calls that out= op).

    `python_kernels`: overloads that the release registers MPS kernels for from Python
    (`python_mps_kernels` over its torch/*.py files); the installed torch's are found when not given."""
    import yaml

    if yaml_text is None:
        path = _yaml_path()
        if path is None:
            raise RuntimeError("this torch ships no torchgen/packaged/ATen/native/native_functions.yaml")
        yaml_text = path.read_text(encoding="utf-8")
        torch_version = torch_version or torch.__version__
        source = source or str(path)
        if python_kernels is None:
            python_kernels = python_mps_kernels(_installed_torch_sources())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries = yaml.load(yaml_text, Loader=loader)
    info: dict[str, dict] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "func" not in entry:
            continue
        schema = entry["func"]
        name = schema.split("(", 1)[0].strip()
        keys: set[str] = set()
        for key_list in (entry.get("dispatch") or {}).keys():
            keys.update(k.strip() for k in key_list.split(","))
        returns = schema.rsplit("->", 1)[-1]
        info[name] = {
            "keys": keys,
            "delegate": entry.get("structured_delegate"),
            "implicit_default": "dispatch" not in entry and not entry.get("structured_delegate"),
            "view": any("!" not in m for m in _RETURN_ALIAS.findall(returns)),
            "out": _is_out(schema),
            "signature": _signature(schema),
        }
        tags = entry.get("tags") or []
        tags = [tags] if isinstance(tags, str) else tags
        # torchgen generates the autogen'd variants of a composite-implicit op only when it is tagged core.
        autogen = str(entry.get("autogen") or "") if not info[name]["implicit_default"] or "core" in tags else ""
        for generated in autogen.split(","):
            generated = generated.strip()
            if generated:
                info.setdefault(
                    generated,
                    {
                        "keys": {"CompositeExplicitAutograd"},
                        "delegate": None,
                        "implicit_default": False,
                        "view": False,
                        "out": generated.endswith("out"),
                        "signature": None,
                    },
                )

    # MPS kernels that torch registers from Python (torch.library) are in no yaml (torch >= 2.10:
    # aten::linalg_lu_solve.out, in torch/_refs/linalg). Read from the release's own files, so the
    # installed torch and a downloaded wheel are judged the same way.
    for name in python_kernels or ():
        if name in info:
            info[name]["keys"].add("MPS")

    def kernels(name: str) -> set[str]:
        item = info[name]
        keys = set(item["keys"])
        if item["delegate"] and item["delegate"] in info:
            keys |= info[item["delegate"]]["keys"]
        return keys

    ops: dict[str, str] = {}
    inner: dict[str, str] = {}
    for name, item in info.items():
        keys = kernels(name)
        if "MPS" in keys:
            status = KERNEL
        elif item["implicit_default"] or "CompositeImplicitAutograd" in keys:
            status = IMPLICIT
        elif keys & {"CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional"}:
            status = EXPLICIT
        elif "CPU" not in keys:
            status = MISSING_NO_CPU
        elif item["view"]:
            status = MISSING_VIEW
        else:
            status = MISSING
        ops[f"aten::{name}"] = status
    by_signature: dict[str, list[str]] = {}
    for name, item in info.items():
        if item["signature"]:
            by_signature.setdefault(item["signature"], []).append(name)
    for name, item in info.items():
        full = f"aten::{name}"
        if ops[full] != EXPLICIT or item["out"] or full in NOT_THROUGH_OUT or not item["signature"]:
            continue
        for sibling in by_signature.get(item["signature"], []):
            if info[sibling]["out"] and ops[f"aten::{sibling}"] == MISSING:
                ops[full] = MISSING_INNER
                inner[full] = f"aten::{sibling}"
                break
    # A composite-explicit functional op whose in-place variant has no MPS kernel: its kernel is a clone
    # and that in-place op (`put` calls `put_`; so do the functional ops autogen makes from in-place ones).
    for full, status in list(ops.items()):
        base, dot, overload = full.partition(".")
        inplace = f"{base}_{dot}{overload}"
        if status == EXPLICIT and ops.get(inplace) == MISSING:
            ops[full] = MISSING_INNER
            inner[full] = inplace
    for name in BOXED_FALLBACKS:
        if ops.get(name) not in (KERNEL,):
            ops[name] = BOXED
    counts: dict[str, int] = {}
    for status in ops.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "version": SUPPORT_VERSION,
        "torch": torch_version or "unknown",
        "source": source or "native_functions.yaml",
        "counts": counts,
        "ops": ops,
        "inner": inner,
    }


def _is_out(schema: str) -> bool:
    """An out= overload: a keyword-only argument that it writes to (`*, Tensor(a!) out`)."""
    arguments = schema.split("->", 1)[0].partition("(")[2].rpartition(")")[0]
    keyword_only = False
    for part in _split_arguments(arguments):
        part = part.strip()
        if part == "*":
            keyword_only = True
        elif keyword_only and "!)" in part:
            return True
    return False


def _signature(schema: str) -> str | None:
    """The schema without its overload name and out= arguments, to group an op with its out= variant."""
    head, _, rest = schema.split("->", 1)[0].partition("(")
    arguments = rest.rpartition(")")[0]
    base = head.split(".", 1)[0].strip()
    if base.endswith("_"):
        return None  # in-place ops are not grouped with the functional one here
    parts = [p.strip() for p in _split_arguments(arguments)]
    options = ("ScalarType? dtype", "Layout? layout", "Device? device", "bool? pin_memory")
    kept = [p for p in parts if p and "!" not in p and p != "*" and not p.startswith(options)]
    return f"{base}({', '.join(kept)})"


def _split_arguments(arguments: str) -> list[str]:
    depth, current, parts = 0, "", []
    for char in arguments:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def load_support_table(cache_dir: str | os.PathLike | None = None) -> dict:
    """`build_support_table()`, cached as JSON in cache_dir, keyed by torch version."""
    if cache_dir is None:
        return build_support_table()
    folder = Path(cache_dir)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", torch.__version__)
    path = folder / f"mps-support-v{SUPPORT_VERSION}-torch-{safe}.json"
    with contextlib.suppress(OSError, ValueError):
        table = json.loads(path.read_text(encoding="utf-8"))
        if table.get("torch") == torch.__version__ and table.get("version") == SUPPORT_VERSION:
            return table
    table = build_support_table()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(table), encoding="utf-8")
        os.replace(partial, path)
    return table


# ----------------------------------------------------------------------------------------------
# The simulated device's tensor


class MPSSimTensor(torch.Tensor):
    """A tensor that reports device mps:0 and keeps its data in an ordinary CPU tensor, `elem`."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.size(),
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=MPS_DEVICE,
            requires_grad=False,
        )
        out.elem = elem
        if _SIMULATOR is not None:
            out._sim_storage = _SIMULATOR.track(elem)
        return out

    def __del__(self):
        # The simulated device's memory: a storage is freed when its last wrapper goes.
        simulator = _SIMULATOR
        if simulator is not None:
            with contextlib.suppress(Exception):
                simulator.untrack(self.__dict__.get("_sim_storage", 0))

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _active().dispatch(func, types, args, kwargs)

    # A traceable wrapper subclass: nn.Module._apply then swaps parameters in place.
    def __tensor_flatten__(self):
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return MPSSimTensor(inner["elem"])

    # Python-level entry points that, on a Linux build, would reach an MPS device guard in C++
    # (hand-written bindings in torch/csrc/autograd/python_variable_methods.cpp and indexing).
    def contiguous(self, memory_format=torch.contiguous_format):
        if self.is_contiguous(memory_format=memory_format):
            return self
        return _active().dispatch(torch.ops.aten.clone.default, (), (self,), {"memory_format": memory_format})

    def copy_(self, src, non_blocking=False):
        return _active().dispatch(torch.ops.aten.copy_.default, (), (self, src), {"non_blocking": non_blocking})

    def nonzero(self, *, as_tuple=False):
        # Hand-written binding (python_torch_functions_manual.cpp) with a device guard: as its aten ops.
        if as_tuple:
            return tuple(torch.ops.aten.nonzero_numpy.default(self))
        return torch.ops.aten.nonzero.default(self)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.dtype.is_complex or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __invert__(self):
        return _active().dispatch(torch.ops.aten.bitwise_not.default, (), (self,), {})

    def __format__(self, format_spec):
        if self.dim() == 0:
            return self.item().__format__(format_spec)
        return super().__format__(format_spec)

    def __repr__(self, *, tensor_contents=None):
        """As a real mps tensor prints: tensor([...], device='mps:0', dtype=...)."""
        text = repr(self.elem)
        at = text.find(", dtype=")
        at = at if at >= 0 else text.rfind(")")
        return f"{text[:at]}, device='mps:0'{text[at:]}"

    def __getitem__(self, index):
        return _active().getitem(self, index)

    def __setitem__(self, index, value):
        _active().setitem(self, index, value)

    def to(self, *args, **kwargs):
        return _active().tensor_to(self, args, kwargs)

    def cpu(self, memory_format=torch.preserve_format):
        return _active().tensor_to(self, ("cpu",), {"memory_format": memory_format})

    def numpy(self, *, force=False):
        return _active().numpy(self, force)

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def tolist(self):
        return self.elem.tolist()

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return _active().new_tensor(self, data, dtype, device)

    def requires_grad_(self, requires_grad=True):
        return self  # autograd is not simulated: see the module's docstring

    def data_ptr(self):
        return self.elem.data_ptr()

    def untyped_storage(self):
        return self.elem.untyped_storage()

    def __reduce_ex__(self, protocol):
        return self.elem.__reduce_ex__(protocol)

    @property
    def data(self):
        return _active().dispatch(torch.ops.aten.detach.default, (), (self,), {})

    @data.setter
    def data(self, value):
        if isinstance(value, MPSSimTensor):
            self.elem = value.elem
        else:
            self.elem = value
        torch.utils.swap_tensors(self, MPSSimTensor(self.elem))


# torch.Generator(device="mps") without an MPS backend: a CPU generator that answers device mps:0.
_BaseGenerator = torch._C.Generator


class _GeneratorMeta(type(_BaseGenerator)):
    def __instancecheck__(cls, instance):
        return isinstance(instance, _BaseGenerator)

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, _BaseGenerator)


# The C++ generators (by address, `_cdata`) that stand for mps generators. A generator passed through
# the dispatcher comes back to Python as a new object, so the address is what identifies it.
_MPS_GENERATORS: dict[int, object] = {}


class SimGenerator(_BaseGenerator, metaclass=_GeneratorMeta):
    """What `torch.Generator` is while the simulator runs."""

    def __new__(cls, device="cpu"):
        target = torch.device(device)
        if target.type == "mps":
            generator = _BaseGenerator.__new__(cls, "cpu")
            generator._sim_mps = True
            address = generator._cdata
            _MPS_GENERATORS[address] = weakref.ref(generator)
            weakref.finalize(generator, _MPS_GENERATORS.pop, address, None)
            return generator
        return _BaseGenerator.__new__(cls, target)

    @property
    def device(self):
        if getattr(self, "_sim_mps", False):
            return MPS_DEVICE
        return _BaseGenerator.device.__get__(self)


def _generator_is_mps(generator) -> bool:
    if getattr(generator, "_sim_mps", False):
        return True
    return bool(_MPS_GENERATORS) and getattr(generator, "_cdata", None) in _MPS_GENERATORS


def _is_mps(device) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "mps"
    if isinstance(device, str):
        return device.split(":", 1)[0].strip() == "mps"
    return False


def _is_cpu(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cpu"
    if isinstance(device, str):
        return device.split(":", 1)[0].strip() == "cpu"
    return False


def _unwrap(value):
    kind = type(value)
    if kind is MPSSimTensor:
        return value.elem
    if kind is list or kind is tuple:
        return kind(_unwrap(v) for v in value)
    if isinstance(value, MPSSimTensor):
        return value.elem
    if kind is torch.device and value.type == "mps":
        return CPU_DEVICE
    return value


def _wrap(value):
    if isinstance(value, torch.Tensor):
        return value if isinstance(value, MPSSimTensor) else MPSSimTensor(value)
    kind = type(value)
    if kind is list or kind is tuple:
        return kind(_wrap(v) for v in value)
    return value


# Ops whose CPU float16 kernels are many times slower than float32 (strided convolution up to 20x,
# grid_sample and gelu 20-40x): computed in float32 and rounded to float16. The result is what a
# float16 kernel that accumulates in float32 gives, as the CPU's own float16 kernels (and Metal's) do.
_FLOAT32_COMPUTE = {
    torch.ops.aten.convolution.default,
    torch.ops.aten.grid_sampler_2d.default,
    torch.ops.aten.gelu.default,
    torch.ops.aten.native_group_norm.default,
    torch.ops.aten.silu.default,
}


def _has_half(args) -> bool:
    for value in args:
        if isinstance(value, torch.Tensor) and value.dtype is torch.float16:
            return True
    return False


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


class _OpInfo:
    """What dispatch needs to know about an overload, computed once."""

    __slots__ = ("name", "status", "write_returns", "inplace_view", "mutated", "rules")

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


_SIMULATOR: Simulator | None = None


def _active() -> Simulator:
    if _SIMULATOR is None:
        raise RuntimeError("the MPS simulator is not installed")
    return _SIMULATOR


class Simulator:
    """The checks and the bookkeeping; `install()` makes one and hooks it into torch."""

    def __init__(self, tree: str | os.PathLike, table: dict, fallback_enabled: bool | None = None):
        self.tree = str(Path(tree).resolve())
        self.table = table
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
        self._own_files = {str(Path(__file__).resolve())}
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
            "macos": ".".join(map(str, SIMULATED_MACOS)),
            "torch": torch.__version__,
            "target_torch": self.target or {"version": self.table.get("torch"), "origin": "installed torch"},
            "table_counts": self.table.get("counts", {}),
            "judged_by_name": dict(sorted(self.judged_by_name.items())),
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
            return 0
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
        if device is None:
            self.check_mixing(info.name, args, kwargs)
        if generator is not None:
            self.check_generator(info.name, generator, on_mps)
        cpu_args = _unwrap(args)
        cpu_kwargs = {k: _unwrap(v) for k, v in kwargs.items()} if kwargs else kwargs
        try:
            if func in _FLOAT32_COMPUTE and _has_half(cpu_args):
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
            return _ORIGINALS["Tensor.to"](tensor.elem, "cpu", copy=True, **options)
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
        return tensor.elem.detach().numpy()

    def new_tensor(self, tensor, data, dtype, device):
        if device is not None and not _is_mps(device):
            return _ORIGINALS["Tensor.new_tensor"](tensor.elem, data, dtype=dtype, device=device)
        elem = _ORIGINALS["Tensor.new_tensor"](tensor.elem, data, dtype=dtype)
        out = MPSSimTensor(elem)
        if self.recording:
            self.check_created("aten::new_tensor", out)
        return out

    def getitem(self, tensor: MPSSimTensor, index):
        self.op_count += 1
        self.current_op = "aten::index"
        return _wrap(tensor.elem[_unwrap_index(index)])

    def setitem(self, tensor: MPSSimTensor, index, value) -> None:
        self.op_count += 1
        source = value.elem if isinstance(value, MPSSimTensor) else value
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
        macos_15 = SIMULATED_MACOS >= (15, 0)
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
        return torch.ops.aten._scaled_dot_product_attention_math.default(
            query, key, value, mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa
        )[0]


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


# ----------------------------------------------------------------------------------------------
# Hooking into torch

_ORIGINALS: dict = {}


def _split_copy(args, kwargs):
    """Tensor.to's `copy`, which torch._C._nn._parse_to does not take: by keyword, or positional after
    non_blocking (`to(dtype, non_blocking, copy)`, `to(device, dtype, non_blocking, copy)`)."""
    copy = bool(kwargs.get("copy", False))
    kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
    if len(args) >= 2 and isinstance(args[-1], bool) and isinstance(args[-2], bool):
        copy, args = args[-1], args[:-1]
    return args, kwargs, copy


def _patched_to(self, *args, **kwargs):
    """Tensor.to for a CPU tensor: "mps" (or another mps tensor) as the target makes a simulated one."""
    target = args[0] if args else kwargs.get("device")
    if _is_mps(target) or isinstance(target, MPSSimTensor) or isinstance(kwargs.get("other"), MPSSimTensor):
        parsed_args, parsed, copy = _split_copy(args, kwargs)
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*parsed_args, **parsed)
        if device is not None and device.type == "mps":
            return _active().to_device(self, dtype, copy, memory_format)
    return _ORIGINALS["Tensor.to"](self, *args, **kwargs)


def _patched_new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    if _is_mps(device):
        return _active().to_device(_ORIGINALS["Tensor.new_tensor"](self, data, dtype=dtype, device="cpu"))
    return _ORIGINALS["Tensor.new_tensor"](self, data, dtype=dtype, device=device, requires_grad=requires_grad)


def _factory(name):
    original = getattr(torch, name)

    def factory(*args, device=None, **kwargs):
        if _is_mps(device):
            kwargs.pop("requires_grad", None)
            data = args[0] if args else kwargs.get("data")
            if isinstance(data, MPSSimTensor):
                return _active().tensor_to(data, (), {"dtype": kwargs.get("dtype")})
            return _active().to_device(original(*args, device="cpu", **kwargs))
        return original(*args, device=device, **kwargs)

    factory.__name__ = name
    factory.__doc__ = original.__doc__
    return factory


def _patched_nonzero(input, *args, **kwargs):
    if isinstance(input, MPSSimTensor) and not args and set(kwargs) <= {"as_tuple"}:
        return input.nonzero(**kwargs)
    return _ORIGINALS["nonzero"](input, *args, **kwargs)


def _patched_load(*args, **kwargs):
    location = kwargs.get("map_location")
    if _is_mps(location):
        kwargs["map_location"] = "cpu"
        loaded = _ORIGINALS["load"](*args, **kwargs)
        return _to_mps_tree(loaded)
    return _ORIGINALS["load"](*args, **kwargs)


def _patched_load_file(filename, device="cpu"):
    """safetensors.torch.load_file(..., device="mps"): loaded on the CPU, then moved to the simulated device."""
    if _is_mps(device):
        return _to_mps_tree(_ORIGINALS["safetensors.load_file"](filename, device="cpu"))
    return _ORIGINALS["safetensors.load_file"](filename, device=device)


def _to_mps_tree(value):
    if isinstance(value, torch.Tensor) and not isinstance(value, MPSSimTensor):
        return _active().to_device(value)
    if isinstance(value, dict):
        converted = {k: _to_mps_tree(v) for k, v in value.items()}
        if type(value) is dict:
            return converted
        with contextlib.suppress(Exception):
            copy = type(value)()
            copy.update(converted)
            return copy
        return converted
    if type(value) in (list, tuple):
        return type(value)(_to_mps_tree(v) for v in value)
    return value


def _memory_in_use() -> int:
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        return 0


# The simulated Mac's memory: 16 GB, the smallest current Apple Silicon configuration, whose
# recommended working set (torch.mps.recommended_max_memory) Metal puts at two thirds of its RAM,
# 10.7 GiB. The runtime helper's dtype policy then takes the float16 path such a Mac takes,
# whatever the memory of the machine running the simulation.
SIMULATED_MAC_RAM = 16 * 2**30


def _recommended_max_memory() -> int:
    return SIMULATED_MAC_RAM * 2 // 3


class _MPSModule:
    """Replacements for torch.mps's functions (on Linux they raise)."""

    fraction = 1.0

    @staticmethod
    def is_available():
        return True

    @staticmethod
    def device_count():
        return 1

    @staticmethod
    def empty_cache():
        return None

    @staticmethod
    def synchronize():
        return None

    @staticmethod
    def manual_seed(seed):
        torch.default_generator.manual_seed(int(seed))

    @staticmethod
    def seed():
        torch.default_generator.seed()

    @staticmethod
    def get_rng_state(device="mps"):
        return torch.default_generator.get_state()

    @staticmethod
    def set_rng_state(new_state, device="mps"):
        torch.default_generator.set_state(new_state)

    @staticmethod
    def current_allocated_memory():
        return _memory_in_use()

    @staticmethod
    def driver_allocated_memory():
        return _memory_in_use()

    @staticmethod
    def recommended_max_memory():
        return _recommended_max_memory()

    @classmethod
    def set_per_process_memory_fraction(cls, fraction):
        if not isinstance(fraction, float):
            raise TypeError("Invalid type for fraction argument, must be `float`")
        if fraction < 0 or fraction > 2:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~2")
        cls.fraction = fraction


# ----------------------------------------------------------------------------------------------
# The target torch's torch.mps / torch.backends.mps API (names come and go between releases:
# torch.mps.recommended_max_memory from 2.5, torch.backends.mps.is_macos_or_newer from 2.3)

API_FILES = {"torch.mps": "torch/mps/__init__.py", "torch.backends.mps": "torch/backends/mps/__init__.py"}


def public_api(text: str) -> list[str]:
    """The public names one of those modules defines or exports: its top-level functions (not _private)
    and its `__all__`, read with ast (never imported, so a macOS wheel's files read the same way)."""
    import ast

    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            elements = getattr(node.value, "elts", [])
            names.update(e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return sorted(names)


def installed_api() -> dict[str, list[str]]:
    """`public_api` of the installed torch's own files."""
    root = Path(torch.__file__).resolve().parent.parent
    return {module: public_api((root / path).read_text(encoding="utf-8")) for module, path in API_FILES.items()}


def _model_target_api(tree: str | os.PathLike, api: dict[str, list[str]], version: str) -> None:
    """Leave on torch.mps / torch.backends.mps, as the tree's code sees them, only the names of the target
    release (`api`, a table's "mps_api"): any other (this torch's own or the simulator's) is taken off, so
    the tree gets AttributeError at its call site as on the Mac. Code outside the tree (this torch's own
    internals, such as torch._dynamo listing torch.mps.is_available, and the libraries installed here)
    still gets it through the module's __getattr__: on the Mac those would be the target's own, and
    consistent with it. A name the target has and this torch lacks cannot be provided."""
    inside = os.path.realpath(tree) + os.sep
    ours = {  # what install() puts there, whatever this torch has
        "torch.mps": {n for n, v in vars(_MPSModule).items() if isinstance(v, (staticmethod, classmethod))},
        "torch.backends.mps": {"is_available", "is_built", "is_macos_or_newer", "is_macos13_or_newer"},
    }
    installed = installed_api()
    for module_name, module in (("torch.mps", torch.mps), ("torch.backends.mps", torch.backends.mps)):
        keep = set(api.get(module_name, ()))
        names = set(installed[module_name]) | ours[module_name]
        hidden = {name: vars(module).pop(name) for name in sorted(names - keep) if name in vars(module)}
        previous = vars(module).get("__getattr__")

        def __getattr__(name, hidden=hidden, previous=previous, module_name=module_name):
            if name in hidden and not os.path.realpath(sys._getframe(1).f_code.co_filename).startswith(inside):
                return hidden[name]
            if previous is not None:
                return previous(name)
            missing = f" (torch {version}, the tree's target, has none)" if name in hidden else ""
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}{missing}")

        module.__getattr__ = __getattr__


def install(
    tree: str | os.PathLike, cache_dir: str | os.PathLike | None = None, table: str | os.PathLike | None = None
) -> Simulator:
    """Make this process's torch answer as an Apple-Silicon MPS machine, checking every device op.
    Call it before the tree's modules are imported; it lasts for the life of the process.

    `table`: a JSON table of the *target* torch (verify writes it: lsync-port's shipped data for the
    torch the tree will run with on a Mac); without it, the installed torch's own (`load_support_table`)."""
    global _SIMULATOR
    if _SIMULATOR is not None:
        return _SIMULATOR
    table = json.loads(Path(table).read_text(encoding="utf-8")) if table else load_support_table(cache_dir)
    simulator = Simulator(tree, table)
    _SIMULATOR = simulator

    torch.set_grad_enabled(False)
    torch.__future__.set_overwrite_module_params_on_conversion(True)

    backend = torch.backends.mps
    # lru_cache-wrapped like torch's own (torch._dynamo reads `is_available.__wrapped__`).
    backend.is_available = functools.lru_cache(lambda: True)
    backend.is_built = lambda: True
    backend.is_macos_or_newer = functools.lru_cache(lambda major, minor: SIMULATED_MACOS >= (major, minor))
    backend.is_macos13_or_newer = functools.lru_cache(lambda minor=0: SIMULATED_MACOS >= (13, minor))
    for name in (
        "is_available",
        "device_count",
        "empty_cache",
        "synchronize",
        "manual_seed",
        "seed",
        "get_rng_state",
        "set_rng_state",
        "current_allocated_memory",
        "driver_allocated_memory",
        "recommended_max_memory",
        "set_per_process_memory_fraction",
    ):
        setattr(torch.mps, name, getattr(_MPSModule, name))
    _model_target_api(tree, table.get("mps_api") or installed_api(), table.get("torch", torch.__version__))

    _ORIGINALS["Tensor.to"] = torch.Tensor.to
    _ORIGINALS["Tensor.new_tensor"] = torch.Tensor.new_tensor
    _ORIGINALS["load"] = torch.load
    _ORIGINALS["sdpa"] = torch.nn.functional.scaled_dot_product_attention
    torch.Tensor.to = _patched_to
    torch.Tensor.new_tensor = _patched_new_tensor
    for name in ("tensor", "as_tensor", "asarray"):
        if hasattr(torch, name):
            setattr(torch, name, _factory(name))
    torch.load = _patched_load
    torch.serialization.load = _patched_load
    _ORIGINALS["nonzero"] = torch.nonzero
    torch.nonzero = _patched_nonzero
    with contextlib.suppress(ImportError):
        import safetensors.torch

        _ORIGINALS["safetensors.load_file"] = safetensors.torch.load_file
        safetensors.torch.load_file = _patched_load_file
    torch.Generator = SimGenerator
    torch.nn.functional.scaled_dot_product_attention = simulator.sdpa
    torch._C._nn.scaled_dot_product_attention = simulator.sdpa
    _Mode(simulator).__enter__()
    return simulator


def installed() -> Simulator | None:
    return _SIMULATOR
