"""Finders: what in a tree is still tied to CUDA, with file:line, why it breaks on a Mac and the fix.

`scan` shows these for a whole tree; `apply` runs the same finders over its result and calls what
is left on the inference path *residue*. Severity:
  error    breaks or silently skips the GPU on a Mac (counted as residue)
  warning  may break depending on data (float64, fp16 interpolate without upcast)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider
from packaging.utils import canonicalize_name

from .rules.device_literal import cuda_literal
from .rules.requirements import RequirementLine


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    severity: str  # "error" | "warning"
    code: str
    why: str
    fix: str
    # Where in the source (start line, column, end line, column): lets apply tell which findings
    # a rewrite covered. Not part of the report.
    span: tuple[int, int, int, int] = field(default=(0, 0, 0, 0), compare=False, repr=False)

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("path", "line", "kind", "severity", "code", "why", "fix")}


# What each torch.cuda call does on a Mac, and its backend-neutral replacement.
_OFF_GPU = "returns False on a Mac, so the code takes its CPU path and never uses the Apple GPU"
_RAISES = "raises on a Mac ('Torch not compiled with CUDA enabled')"
_NOTHING = "does nothing on a Mac (frees or seeds no MPS state)"
CUDA_CALLS = {
    "torch.cuda.is_available": (_OFF_GPU, "_lsync_port.is_available() or _lsync_port.device()"),
    "torch.cuda.empty_cache": (_NOTHING, "_lsync_port.empty_cache()"),
    "torch.cuda.manual_seed": (_NOTHING, "_lsync_port.manual_seed(seed)"),
    "torch.cuda.manual_seed_all": (_NOTHING, "_lsync_port.manual_seed(seed)"),
    "torch.cuda.synchronize": (_RAISES, "_lsync_port.synchronize()"),
    "torch.cuda.amp.autocast": ("autocasts nothing on a Mac (CUDA-only autocast)", "_lsync_port.autocast(...)"),
    "torch.cuda.get_device_capability": (_RAISES, "_lsync_port.fp16_supported()"),
    "torch.cuda.set_per_process_memory_fraction": (_RAISES, "_lsync_port.set_memory_fraction(f)"),
    "torch.cuda.get_device_properties": (_RAISES, "_lsync_port.total_memory()"),
    "torch.cuda.current_device": (_RAISES + "; torch.mps has no current_device", "_lsync_port.current_device()"),
    "torch.cuda.device_count": ("returns 0 on a Mac", "_lsync_port.device_count()"),
    "torch.cuda.set_device": (_RAISES, "_lsync_port.set_device(index)"),
}
_UNKNOWN_CUDA_CALL = (
    "needs CUDA; on a Mac it raises or does nothing",
    "no MPS counterpart known: guard it with `if _lsync_port.device_type() == 'cuda':`",
)
# Flags with no MPS counterpart: harmless on a Mac, reported nowhere.
_HARMLESS_PREFIXES = ("torch.backends.cuda.", "torch.backends.cudnn.", "torch.cuda.nvtx")

# Requirements with no macOS arm64 wheel, and what to use instead.
NO_MAC_WHEEL = {
    "decord": "eva-decord (CPython <= 3.11) or decord2 (3.12+); both install `import decord`",
    "onnxruntime-gpu": "onnxruntime (ships CoreMLExecutionProvider on macOS)",
    "xformers": 'keep it behind `; platform_system != "Darwin"`',
    "triton": 'keep it behind `; platform_system != "Darwin"`',
}

PY_NEEDLES = (b"cuda", b"CUDA", b"float64", b"double")
REQ_NEEDLES = (b"decord", b"onnxruntime", b"xformers", b"triton", b"whl/cu")


class PythonFinder(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.found: list[Finding] = []
        self._empty = cst.Module(body=[])

    def _add(self, node: cst.CSTNode, kind: str, severity: str, why: str, fix: str) -> None:
        position = self.get_metadata(PositionProvider, node)
        span = (position.start.line, position.start.column, position.end.line, position.end.column)
        code = " ".join(self._empty.code_for_node(node).split())
        self.found.append(Finding(self.path, position.start.line, kind, severity, code[:120], why, fix, span))

    def _qualified(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.get_metadata(QualifiedNameProvider, node, set())}

    def visit_Call(self, node: cst.Call) -> None:
        for name in self._qualified(node.func):
            if name.startswith("torch.cuda.") and not name.startswith(_HARMLESS_PREFIXES):
                why, fix = CUDA_CALLS.get(name, _UNKNOWN_CUDA_CALL)
                self._add(node, "torch-cuda", "error", f"{name} {why}", fix)
                return
        if m.matches(node, m.Call(func=m.Attribute(attr=m.Name("cuda")))):
            self._add(node, "cuda-method", "error", ".cuda() moves to an NVIDIA GPU only", ".to(_lsync_port.device())")
        elif m.matches(node, m.Call(func=m.Attribute(attr=m.Name("double")), args=[])):
            self._add(
                node,
                "float64",
                "warning",
                "MPS has no float64: 'Cannot convert a MPS Tensor to float64 dtype'",
                ".float() (float32) for tensors that reach the device",
            )

    def visit_Attribute(self, node: cst.Attribute) -> None:
        names = self._qualified(node)
        if names & {"torch.float64", "torch.double"}:
            self._add(
                node,
                "float64",
                "warning",
                "MPS has no float64: 'Cannot convert a MPS Tensor to float64 dtype'",
                "torch.float32 where the tensor reaches the device",
            )

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value in ("device", "map_location", "device_type"):
            self._literal(node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.name.value == "device" and node.default is not None:
            self._literal(node.default)

    def visit_Assign(self, node: cst.Assign) -> None:
        if all(m.matches(t.target, m.Name("device")) for t in node.targets):
            self._literal(node.value)

    def leave_Call(self, node: cst.Call) -> None:
        is_move = m.matches(node.func, m.Attribute(attr=m.Name("to"))) or "torch.device" in self._qualified(node.func)
        if is_move and node.args and node.args[0].keyword is None:
            self._literal(node.args[0].value)

    def _literal(self, value: cst.BaseExpression) -> None:
        if cuda_literal(value) is not None:
            self._add(value, "cuda-literal", "error", "a hard-coded CUDA device", "_lsync_port.device()")

    def visit_List(self, node: cst.List) -> None:
        values = {el.value.evaluated_value for el in node.elements if isinstance(el.value, cst.SimpleString)}
        if "CUDAExecutionProvider" in values and not values & {"CPUExecutionProvider", "CoreMLExecutionProvider"}:
            self._add(
                node,
                "onnx-cuda-provider",
                "error",
                "ONNX Runtime providers list only CUDA; onnxruntime on macOS has CoreML and CPU",
                "providers=_lsync_port.onnx_providers(device)",
            )


def find_in_python(path: str, data: bytes) -> list[Finding]:
    if not any(needle in data for needle in PY_NEEDLES):
        return []
    finder = PythonFinder(path)
    MetadataWrapper(cst.parse_module(data), unsafe_skip_copy=True).visit(finder)
    return sorted(finder.found, key=lambda f: f.line)


def find_in_requirements(path: str, text: str) -> list[Finding]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("-") and "download.pytorch.org/whl/cu" in stripped:
            found.append(
                Finding(
                    path,
                    number,
                    "cuda-index",
                    "error",
                    stripped,
                    "a CUDA wheel index: pip on a Mac finds no such builds",
                    "remove the line",
                )
            )
            continue
        parsed = RequirementLine.parse(line)
        if parsed is None:
            continue
        name = canonicalize_name(parsed.requirement.name)
        if name not in NO_MAC_WHEEL:
            continue
        marker = parsed.requirement.marker
        if marker is not None and not marker.evaluate(
            {"platform_system": "Darwin", "sys_platform": "darwin", "platform_machine": "arm64"}
        ):
            continue  # already kept off macOS
        found.append(
            Finding(
                path, number, "no-mac-wheel", "error", stripped, f"{name} has no macOS arm64 wheel", NO_MAC_WHEEL[name]
            )
        )
    return found
