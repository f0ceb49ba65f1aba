"""The support table: which aten overloads have an MPS kernel in a torch release, derived from
that release's native_functions.yaml (and its Python-registered MPS kernels)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import torch

SUPPORT_VERSION = "2"

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
            "schema": schema,  # its out= flag and signature are parsed when needed (_schema_facts)
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
                        "schema": None,
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

    def schema_facts(item: dict) -> tuple[bool, str | None]:
        if "out" not in item:
            item["out"], item["signature"] = _schema_facts(item["schema"])
        return item["out"], item["signature"]

    # out= ops without an MPS kernel, by signature: only those can make a functional op MISSING_INNER.
    by_signature: dict[str, list[str]] = {}
    for name, item in info.items():
        if ops[f"aten::{name}"] == MISSING:
            out, signature = schema_facts(item)
            if out and signature:
                by_signature.setdefault(signature, []).append(name)
    for name, item in info.items():
        full = f"aten::{name}"
        if ops[full] != EXPLICIT or full in NOT_THROUGH_OUT:
            continue
        out, signature = schema_facts(item)
        if out or not signature:
            continue
        for sibling in by_signature.get(signature, []):
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


# The tensor-options arguments of a factory: not part of what groups an op with its out= variant.
_TENSOR_OPTIONS = {("dtype", "ScalarType?"), ("layout", "Layout?"), ("device", "Device?"), ("pin_memory", "bool?")}


def _schema_facts(schema: str) -> tuple[bool, str | None]:
    """(is an out= overload, signature): torchgen's FunctionSchema parser, which ships in every
    torch wheel; the hand-written reading below for a schema it cannot parse (a release's yaml
    newer or older than the installed torchgen)."""
    try:
        from torchgen.model import FunctionSchema

        parsed = FunctionSchema.parse(schema)
    except Exception:  # noqa: BLE001 - ImportError, or a schema this torchgen does not know
        return _is_out(schema), _signature(schema)
    name = str(parsed.name.name)  # without the overload: "add", "add_", "__and__"
    if name.endswith("_"):
        return bool(parsed.arguments.out), None  # in-place ops are not grouped with the functional one
    kept = [
        str(argument)
        for argument in parsed.arguments.flat_all
        if not (argument.annotation is not None and argument.annotation.is_write)
        and (argument.name, str(argument.type)) not in _TENSOR_OPTIONS
    ]
    return bool(parsed.arguments.out), f"{name}({', '.join(kept)})"


# The hand-written reading, for schemas torchgen cannot parse. It cuts a schema at its first "->",
# so a view's `Tensor(a -> *) self` (split, chunk, unbind) reads as no arguments: harmless for the
# grouping (no out= op has such an argument), and the same table as torchgen's on torch 2.1-2.13.
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
