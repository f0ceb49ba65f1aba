"""Hooking the simulator into torch: `install()` patches the entry points that on a Linux build reach
an MPS device guard in C++ before any dispatch, and replaces torch.mps and torch.backends.mps."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path

import torch

from . import registry
from .simulator import (
    _ORIGINALS,
    SIMULATED_MAC_GPU_CORES,
    SIMULATED_MAC_NAME,
    SIMULATED_MAC_RAM,
    Simulator,
    _Mode,
    _split_copy,
)
from .support import load_support_table
from .tensor import MPSSimTensor, SimGenerator, _is_mps


def _patched_to(self, *args, **kwargs):
    """Tensor.to for a CPU tensor: "mps" (or another mps tensor) as the target makes a simulated one."""
    target = args[0] if args else kwargs.get("device")
    if _is_mps(target) or isinstance(target, MPSSimTensor) or isinstance(kwargs.get("other"), MPSSimTensor):
        parsed_args, parsed, copy = _split_copy(args, kwargs)
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*parsed_args, **parsed)
        if device is not None and device.type == "mps":
            return registry.active().to_device(self, dtype, copy, memory_format)
    return _ORIGINALS["Tensor.to"](self, *args, **kwargs)


def _patched_new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    if _is_mps(device):
        return registry.active().to_device(_ORIGINALS["Tensor.new_tensor"](self, data, dtype=dtype, device="cpu"))
    return _ORIGINALS["Tensor.new_tensor"](self, data, dtype=dtype, device=device, requires_grad=requires_grad)


def _factory(name):
    original = getattr(torch, name)

    def factory(*args, device=None, **kwargs):
        if _is_mps(device):
            kwargs.pop("requires_grad", None)
            data = args[0] if args else kwargs.get("data")
            if isinstance(data, MPSSimTensor):
                return registry.active().tensor_to(data, (), {"dtype": kwargs.get("dtype")})
            return registry.active().to_device(original(*args, device="cpu", **kwargs))
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
        return registry.active().to_device(value)
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
        "torch.backends.mps": {
            "is_available",
            "is_built",
            "is_macos_or_newer",
            "is_macos13_or_newer",
            "get_name",
            "get_core_count",
        },
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
    if registry.simulator is not None:
        return registry.simulator
    table = json.loads(Path(table).read_text(encoding="utf-8")) if table else load_support_table(cache_dir)
    simulator = Simulator(tree, table)
    registry.simulator = simulator  # the simulator every MPSSimTensor reports to

    torch.set_grad_enabled(False)
    torch.__future__.set_overwrite_module_params_on_conversion(True)

    backend = torch.backends.mps
    # lru_cache-wrapped like torch's own (torch._dynamo reads `is_available.__wrapped__`).
    backend.is_available = functools.lru_cache(lambda: True)
    backend.is_built = lambda: True
    backend.is_macos_or_newer = functools.lru_cache(lambda major, minor: simulator.macos >= (major, minor))
    backend.is_macos13_or_newer = functools.lru_cache(lambda minor=0: simulator.macos >= (13, minor))
    # torch 2.15 added the GPU's name and core count (its own test utilities ask for the name as soon as
    # MPS is available); this torch's C side has no Metal device to ask, so the simulated Mac answers.
    if hasattr(backend, "get_name"):
        backend.get_name = lambda: SIMULATED_MAC_NAME
    if hasattr(backend, "get_core_count"):
        backend.get_core_count = lambda: SIMULATED_MAC_GPU_CORES
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
    return registry.simulator
