"""ComfyUI's side of a custom node, without ComfyUI: the contract verify drives a node package by.

Standalone (stdlib, and torch when outputs are checked): loaded by path in the tree's interpreter.
What ComfyUI does, and so what this models:

- a top-level ``folder_paths`` module is importable before any node loads; the wrapper calls
  ``folder_paths.get_temp_directory()`` (and replaces it), and reads ``folder_paths.__file__`` to find
  ComfyUI's folder (``<ComfyUI>/temp``, which it deletes);
- a node package is a folder under ``custom_nodes/``, imported as a package from its
  ``__init__.py`` (so relative imports work), which exports ``NODE_CLASS_MAPPINGS``;
- a node class has a classmethod ``INPUT_TYPES()`` (``{"required": {name: (TYPE, options)}}``),
  ``RETURN_TYPES`` and ``FUNCTION``; ComfyUI makes an instance with no arguments and calls
  ``getattr(node, FUNCTION)(**inputs)``, which returns a tuple with one value per return type;
- ``IMAGE`` is a float32 tensor ``[frames, height, width, 3]`` in 0..1 on the CPU, ``AUDIO`` a dict
  ``{"waveform": float tensor [1, channels, samples], "sample_rate": int}`` on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path


class ContractError(Exception):
    """The node package does not meet ComfyUI's contract: says which file and what was expected."""


def folder_paths_module(comfy_root: Path) -> types.ModuleType:
    """The `folder_paths` a node sees: ComfyUI's folders under `comfy_root` (made on demand)."""
    module = types.ModuleType("folder_paths")
    module.__file__ = str(comfy_root / "folder_paths.py")  # the wrapper locates ComfyUI from this
    module.base_path = str(comfy_root)
    module.models_dir = str(comfy_root / "models")
    module.folder_names_and_paths = {}

    def folder(name: str) -> str:
        path = comfy_root / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    module.get_temp_directory = lambda: folder("temp")
    module.get_output_directory = lambda: folder("output")
    module.get_input_directory = lambda: folder("input")
    module.get_user_directory = lambda: folder("user")
    module.get_folder_paths = lambda name: [folder(os.path.join("models", name))]
    module.get_full_path = lambda name, filename: (
        path if os.path.isfile(path := os.path.join(comfy_root, "models", name, filename)) else None
    )
    module.get_filename_list = lambda name: sorted(os.listdir(folder(os.path.join("models", name))))
    return module


def load_node_package(package_dir: Path, comfy_root: Path) -> types.ModuleType:
    """Import a custom-node folder the way ComfyUI does, with `folder_paths` in place first."""
    init = package_dir / "__init__.py"
    nodes = package_dir / "nodes.py"
    if not nodes.is_file():
        raise ContractError(f"{nodes}: no nodes.py; a ComfyUI-LatentSyncWrapper tree defines its node classes there")
    if not init.is_file():
        raise ContractError(f"{init}: missing; ComfyUI imports a node folder as a package from its __init__.py")
    sys.modules["folder_paths"] = folder_paths_module(comfy_root)
    name = package_dir.name
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(package_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "NODE_CLASS_MAPPINGS", None), dict):
        raise ContractError(f"{init}: exports no NODE_CLASS_MAPPINGS dict (ComfyUI finds the node classes there)")
    return module


def node_class(package: types.ModuleType, name: str, function: str, inputs: dict, returns: tuple, where: Path):
    """The class registered as `name`, checked against the signature a workflow uses."""
    mappings = package.NODE_CLASS_MAPPINGS
    if name not in mappings:
        raise ContractError(f"{where}: NODE_CLASS_MAPPINGS has no {name!r} (has {', '.join(sorted(mappings))})")
    cls = mappings[name]
    expected = f"{name}: FUNCTION = {function!r}, RETURN_TYPES = {returns}, INPUT_TYPES() requiring {inputs}"
    if getattr(cls, "FUNCTION", None) != function or not callable(getattr(cls, function, None)):
        raise ContractError(
            f"{where}: unknown node signature, FUNCTION is {getattr(cls, 'FUNCTION', None)!r}; expected {expected}"
        )
    if tuple(getattr(cls, "RETURN_TYPES", ())) != returns:
        raise ContractError(
            f"{where}: {name}.RETURN_TYPES is {getattr(cls, 'RETURN_TYPES', None)}; expected {expected}"
        )
    try:
        required = cls.INPUT_TYPES()["required"]
    except Exception as error:
        raise ContractError(f"{where}: {name}.INPUT_TYPES() fails ({error!r}); expected {expected}") from error
    declared = {key: value[0] for key, value in required.items()}
    for key, kind in inputs.items():
        if declared.get(key) != kind:
            raise ContractError(f"{where}: {name} declares inputs {declared}; expected {expected}")
    return cls


def run_node(cls, **inputs) -> tuple:
    """What ComfyUI's executor does for one node: an instance, then its FUNCTION with the inputs."""
    outputs = getattr(cls(), cls.FUNCTION)(**inputs)
    if not isinstance(outputs, tuple) or len(outputs) != len(cls.RETURN_TYPES):
        kind = type(outputs).__name__
        raise ContractError(f"{cls.__name__}.{cls.FUNCTION} returned {kind}, not a tuple of {len(cls.RETURN_TYPES)}")
    return outputs


def image_problems(images) -> list[str]:
    """What is wrong with an IMAGE value, by ComfyUI's rules (empty: nothing)."""
    import torch

    if not isinstance(images, torch.Tensor):
        return [f"IMAGE is a {type(images).__name__}, not a tensor"]
    problems = []
    if images.dim() != 4 or images.shape[-1] != 3:
        problems.append(f"IMAGE has shape {tuple(images.shape)}, not [frames, height, width, 3]")
    if images.dtype != torch.float32:
        problems.append(f"IMAGE is {images.dtype}, not torch.float32")
    if images.device.type != "cpu":
        problems.append(f"IMAGE is on {images.device}, not the CPU (ComfyUI's next node expects it there)")
    values = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(values).all():
        problems.append("IMAGE has NaN or inf")
    elif values.numel() and (values.min() < 0 or values.max() > 1):
        problems.append(f"IMAGE values span {values.min():.3f}..{values.max():.3f}, not 0..1")
    return problems


def audio_problems(audio) -> list[str]:
    import torch

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        return ["AUDIO is not a dict with 'waveform' and 'sample_rate'"]
    waveform, problems = audio["waveform"], []
    if not isinstance(audio["sample_rate"], int):
        problems.append(f"AUDIO sample_rate is a {type(audio['sample_rate']).__name__}, not an int")
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3 or waveform.shape[0] != 1:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        return problems + [f"AUDIO waveform is {shape}, not a tensor [1, channels, samples]"]
    if not waveform.is_floating_point():
        problems.append(f"AUDIO waveform is {waveform.dtype}, not floating point")
    if waveform.device.type != "cpu":
        problems.append(f"AUDIO waveform is on {waveform.device}, not the CPU")
    if not torch.isfinite(waveform.detach().cpu().float()).all():
        problems.append("AUDIO waveform has NaN or inf")
    return problems
