"""A simulated MPS device: run a tree's MPS code path on a machine without a Mac, and check every op.

Used by `lsync-port verify TREE --device mps-sim`. Standalone on purpose: the verify harness loads
this folder by path, as a package, inside the child process that runs the tree under the tree's own interpreter,
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
     composite math path, op by op. Without dropout that path's ops are judged on shadows (meta
     tensors of the same shapes and dtypes: the same checks, buffer sizes included) and the values
     come from the CPU's fused kernel in float32, unless float16 scores could overflow (then op by op).
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
  convolution, grid_sample, addmm, mm, bmm, baddbmm; `_FLOAT32_BELOW`: gelu and group_norm on
  small tensors) are computed in float32 and rounded to float16 too, as a float16 kernel that
  accumulates in float32 would.
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

The parts (each imports only those above it):

    registry.py   the one simulator installed in this process, which every MPSSimTensor reports to
    support.py    the support table: MPS kernels per aten overload, from a release's native_functions.yaml
    tensor.py     MPSSimTensor, the mps generator, moving values between the device and the CPU
    simulator.py  Simulator: the checks (coverage, dtype, mixing, generators, rules, memory) and the CPU run
    hooks.py      install(): torch's entry points, torch.mps and torch.backends.mps, patched
"""

from __future__ import annotations

from .hooks import API_FILES, SIMULATED_MAC_RAM, install, installed, installed_api, public_api
from .simulator import (
    BFLOAT16_WARNING,
    COMPLEX128_ERROR,
    FALLBACK_ENV,
    FLOAT64_ERROR,
    METAL_BUFFER_LIMIT,
    NUMPY_ERROR,
    SIMULATED_MACOS,
    Simulator,
)
from .support import (
    ABSENT,
    BOXED,
    BOXED_FALLBACKS,
    EXPLICIT,
    IMPLICIT,
    KERNEL,
    MISSING,
    MISSING_INNER,
    MISSING_NO_CPU,
    MISSING_VIEW,
    NOT_THROUGH_OUT,
    SUPPORT_VERSION,
    build_support_table,
    fallback_rescues,
    load_support_table,
    python_mps_kernels,
)
from .tensor import CPU_DEVICE, MPS_DEVICE, MPSSimTensor, SimGenerator

__all__ = [
    "ABSENT",
    "API_FILES",
    "BFLOAT16_WARNING",
    "BOXED",
    "BOXED_FALLBACKS",
    "COMPLEX128_ERROR",
    "CPU_DEVICE",
    "EXPLICIT",
    "FALLBACK_ENV",
    "FLOAT64_ERROR",
    "IMPLICIT",
    "KERNEL",
    "METAL_BUFFER_LIMIT",
    "MISSING",
    "MISSING_INNER",
    "MISSING_NO_CPU",
    "MISSING_VIEW",
    "MPS_DEVICE",
    "MPSSimTensor",
    "NOT_THROUGH_OUT",
    "NUMPY_ERROR",
    "SIMULATED_MAC_RAM",
    "SIMULATED_MACOS",
    "SUPPORT_VERSION",
    "SimGenerator",
    "Simulator",
    "build_support_table",
    "fallback_rescues",
    "install",
    "installed_api",
    "installed",
    "load_support_table",
    "public_api",
    "python_mps_kernels",
]
