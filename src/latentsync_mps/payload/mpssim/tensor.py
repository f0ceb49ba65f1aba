"""The simulated device's tensor (`MPSSimTensor`), its generator, and the helpers that move values
between it and the CPU. The simulator they report to is the installed one (registry.py)."""

from __future__ import annotations

import contextlib
import weakref

import torch

from . import registry

MPS_DEVICE = torch.device("mps", 0)
CPU_DEVICE = torch.device("cpu")


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
        if registry.simulator is not None:
            out._sim_storage = registry.simulator.track(elem)
        return out

    def __del__(self):
        # The simulated device's memory: a storage is freed when its last wrapper goes.
        simulator = registry.simulator
        if simulator is not None:
            with contextlib.suppress(Exception):
                simulator.untrack(self.__dict__.get("_sim_storage", 0))

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return registry.active().dispatch(func, types, args, kwargs)

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
        return registry.active().dispatch(torch.ops.aten.clone.default, (), (self,), {"memory_format": memory_format})

    def copy_(self, src, non_blocking=False):
        return registry.active().dispatch(torch.ops.aten.copy_.default, (), (self, src), {"non_blocking": non_blocking})

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
        return registry.active().dispatch(torch.ops.aten.bitwise_not.default, (), (self,), {})

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
        return registry.active().getitem(self, index)

    def __setitem__(self, index, value):
        registry.active().setitem(self, index, value)

    def to(self, *args, **kwargs):
        return registry.active().tensor_to(self, args, kwargs)

    def cpu(self, memory_format=torch.preserve_format):
        return registry.active().tensor_to(self, ("cpu",), {"memory_format": memory_format})

    def numpy(self, *, force=False):
        return registry.active().numpy(self, force)

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def tolist(self):
        return registry.active().tolist(self)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return registry.active().new_tensor(self, data, dtype, device)

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
        return registry.active().dispatch(torch.ops.aten.detach.default, (), (self,), {})

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
