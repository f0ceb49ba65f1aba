"""Every mention of CUDA in a Python file, and how it is accounted for (issue 13's invariant).

A mention is a string that names CUDA, an attribute `.cuda` / `.is_cuda` / `.cudnn`, or a name
that resolves into torch.cuda or torch.backends.cuda/cudnn. After apply, each one on the
inference path must be one of:

  reported    inside a finding (residue or warning): apply and scan name it, with its line
  ported      inside a runtime-helper call (`_lsync_port.device("cuda:1")`): decided at run time
  guarded     under `if _lsync_port.device_type() == "cuda":`, so it runs on CUDA only
  comparison  a test of a device (`device == "cuda"`, `x in ("cuda", "mps")`, `.startswith("cuda")`)
  fallback    a CUDA ONNX provider listed with a CPU or CoreML one (onnxruntime skips what it lacks)
  text        a docstring or a message (print, logging, warnings, an exception), or a string that
              names CUDA in prose ("xformers needs CUDA") rather than as a device
  import      an import statement: binding a name is no use of it

Anything else is `unaccounted`: a CUDA tie the finders missed. tests/test_completeness.py
asserts there is none. Comments are not mentions (they are not code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from latentsync_mps.port.finders import find_in_python
from latentsync_mps.port.outcome import Finding
from latentsync_mps.port.rules.base import HELPER, expression_shape, span_of, span_within
from latentsync_mps.port.rules.cuda_reference import ReportCudaReference
from latentsync_mps.port.rules.device_literal import CUDA_LITERAL
from latentsync_mps.port.rules.device_report import ReportCudaLiteral
from latentsync_mps.port.rules.names import ImportedNameProvider
from latentsync_mps.port.rules.report import DetectionRuleKind

ACCOUNTED = ("reported", "ported", "guarded", "comparison", "fallback", "text", "import")
_CUDA_ATTRIBUTES = frozenset({"cuda", "is_cuda", "cudnn"})
_GUARD = expression_shape(f'{HELPER}.device_type() == "cuda"')
_FALLBACK_PROVIDERS = {"CPUExecutionProvider", "CoreMLExecutionProvider"}


@dataclass(frozen=True)
class Mention:
    path: str
    line: int
    code: str
    how: str  # one of ACCOUNTED, or "unaccounted"


def account(
    path: str, data: bytes, detectors: Sequence[DetectionRuleKind], findings: list[Finding] | None = None
) -> list[Mention]:
    """Every CUDA mention of one file and how it is accounted for. `detectors` are the pack's
    detection rules (RulePack.detectors()); `findings` default to what they report on `data`
    itself (as `scan` would)."""
    if b"cuda" not in data.lower():
        return []
    if findings is None:
        findings = find_in_python(path, data, detectors)
    wrapper = MetadataWrapper(cst.parse_module(data))
    collector = _Collector(path, [f.span for f in findings], detectors)
    wrapper.visit(collector)
    return collector.mentions


class _Collector(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider, ParentNodeProvider, ImportedNameProvider)

    def __init__(
        self, path: str, spans: list[tuple[int, int, int, int]], detectors: Sequence[DetectionRuleKind]
    ) -> None:
        super().__init__()
        self.path = path
        self.spans = spans
        self.mentions: list[Mention] = []
        self._empty = cst.Module(body=[])
        # What the pack's rules report as a CUDA name (report-cuda-reference) and take as text,
        # not a device (report-cuda-literal's callees and suffixes).
        self.references = [d for d in detectors if isinstance(d, ReportCudaReference)]
        literals = [d for d in detectors if isinstance(d, ReportCudaLiteral)]
        self.text_callees = frozenset(c for d in literals for c in d.text_callees)
        self.text_suffixes = tuple(x for d in literals for x in d.text_suffixes)

    def _is_cuda_api(self, name: str) -> bool:
        """Is `name` one the pack reports (torch.cuda and below, torch.backends.cuda/.cudnn names)?"""
        return any(d.matches(name) for d in self.references)

    def _note(self, node: cst.CSTNode) -> None:
        position = self.get_metadata(PositionProvider, node)
        code = " ".join(self._empty.code_for_node(node).split())[:100]
        self.mentions.append(Mention(self.path, position.start.line, code, self._how(node)))

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        if "cuda" in node.value.lower():
            self._note(node)

    def visit_FormattedStringText(self, node: cst.FormattedStringText) -> None:
        if "cuda" in node.value.lower():
            self._note(node)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        names = {q.name for q in self.get_metadata(ImportedNameProvider, node, set())}
        if node.attr.value in _CUDA_ATTRIBUTES or any(self._is_cuda_api(n) for n in names):
            self._note(node)
            return False  # one mention per attribute chain (`torch.cuda.amp.autocast`)
        return True

    def visit_Name(self, node: cst.Name) -> None:
        names = {q.name for q in self.get_metadata(ImportedNameProvider, node, set())}
        parent = self.get_metadata(ParentNodeProvider, node, None)
        if isinstance(parent, cst.Attribute) and parent.attr is node:
            return  # the attribute's own name: judged with the attribute
        if any(self._is_cuda_api(n) for n in names):
            self._note(node)

    # -- how a mention is accounted for -------------------------------------------------------

    def _ancestors(self, node: cst.CSTNode):
        while True:
            parent = self.get_metadata(ParentNodeProvider, node, None)
            if parent is None:
                return
            yield node, parent
            node = parent

    def _how(self, node: cst.CSTNode) -> str:
        span = span_of(self.get_metadata(PositionProvider, node))
        if any(span_within(span, reported) for reported in self.spans):
            return "reported"
        text = _string_value(node)
        for child, parent in self._ancestors(node):
            if isinstance(parent, cst.Import | cst.ImportFrom):
                return "import"
            if isinstance(parent, cst.Call):
                callee = _dotted(parent.func)
                if callee.startswith(f"{HELPER}."):
                    return "ported"
                last = callee.rpartition(".")[2]
                if child is not parent.func and last in ("startswith", "endswith"):
                    return "comparison"
                if child is not parent.func and (last in self.text_callees or last.endswith(self.text_suffixes)):
                    return "text"
            if isinstance(parent, cst.If | cst.IfExp) and expression_shape(self._code(parent.test)) == _GUARD:
                return "guarded"
            if isinstance(parent, cst.Comparison):
                return "comparison"
            if isinstance(parent, cst.Raise):
                return "text"
            if isinstance(parent, cst.List | cst.Tuple | cst.Set) and text == "CUDAExecutionProvider":
                values = {_string_value(e.value) for e in parent.elements}
                if values & _FALLBACK_PROVIDERS:
                    return "fallback"
            if isinstance(parent, cst.Expr) and isinstance(parent.value, cst.SimpleString | cst.ConcatenatedString):
                return "text"  # a docstring, or a string statement
            if isinstance(parent, cst.FormattedString) and text is not None:
                whole = "".join(p.value for p in parent.parts if isinstance(p, cst.FormattedStringText))
                if not whole.lower().startswith("cuda"):
                    return "text"  # f"running on cuda {x}": prose around a value
        if text is not None and not _names_a_device(text):
            return "text"
        return "unaccounted"

    def _code(self, node: cst.CSTNode) -> str:
        return self._empty.code_for_node(node)


def _dotted(node: cst.BaseExpression) -> str:
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
    return ".".join(reversed(parts))


def _string_value(node: cst.CSTNode) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.FormattedStringText):
        return node.value
    return None


def _names_a_device(text: str) -> bool:
    """A string that code could use as a device, a CUDA type or provider: not prose."""
    stripped = text.strip()
    return bool(
        CUDA_LITERAL.fullmatch(stripped)
        or stripped.startswith("cuda:")
        or stripped.startswith("torch.cuda.")
        or stripped == "CUDAExecutionProvider"
    )


def unaccounted(mentions: list[Mention]) -> list[Mention]:
    return [mention for mention in mentions if mention.how not in ACCOUNTED]
