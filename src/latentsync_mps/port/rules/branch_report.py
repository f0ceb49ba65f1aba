"""Detection-only kinds about control flow that treats only CUDA as a GPU (rules in
patches/findings/python.toml; texts and tables are their options).

- report-cuda-type-comparison: `x.device.type == "cuda"` (or `!=`): the comparison the rewriting
  kind cuda-type-check flips; the same test (`cuda_type_comparison`) decides both.
- report-left-out-branch: `if device == "<literal>":` (or `!=`, or `.device`) where a branch sets
  `self.<x> = None`: a component left out on that device. Options: `literal` ("cpu"),
  `names` (what holds the device: ["device"]).
- report-raise-unless: `if <x> != "<literal>": raise ...`: a check that refuses every other
  device. A test that calls the runtime helper is a ported check and is not reported.
  Options: `literal` ("cuda").
- report-unchecked-switch: an `if` whose body calls `method` and whose test does not ask the
  runtime helper: the check is reported. Options: `method`.
"""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import HELPER, RuleError
from latentsync_mps.port.rules.cuda_type_check import cuda_type_comparison
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind, quoted


def _equality(test: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseCompOp, cst.BaseExpression] | None:
    """(left, operator, right) of a single comparison, else None."""
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return None
    return test.left, test.comparisons[0].operator, test.comparisons[0].comparator


def _is_string(node: cst.BaseExpression, value: str) -> bool:
    return isinstance(node, cst.SimpleString) and node.evaluated_value == value


class _ComparisonFinder(DetectionFinder):
    def visit_Comparison(self, node: cst.Comparison) -> None:
        if cuda_type_comparison(node):
            self.add(node)


class ReportCudaTypeComparison(PythonDetectionKind):
    name = "report-cuda-type-comparison"

    def needles(self) -> tuple[str, ...]:
        return quoted("cuda")

    finder_class = _ComparisonFinder


_NONE_TO_SELF = m.Assign(targets=[m.AssignTarget(m.Attribute(value=m.Name("self")))], value=m.Name("None"))


class _LeftOutFinder(DetectionFinder):
    kind: ReportLeftOutBranch

    def visit_If(self, node: cst.If) -> None:
        parts = _equality(node.test)
        if parts is None or not isinstance(parts[1], cst.Equal | cst.NotEqual):
            return
        sides = (parts[0], parts[2])
        names = self.kind.names
        holder = m.Name() | m.Attribute(attr=m.Name())
        device = [s for s in sides if m.matches(s, holder) and _last_name(s) in names]
        if not (any(_is_string(s, self.kind.literal) for s in sides) and device):
            return
        branches = [node.body] + ([node.orelse.body] if isinstance(node.orelse, cst.Else) else [])
        if any(m.findall(branch, _NONE_TO_SELF) for branch in branches):
            self.add(node.test)


def _last_name(node: cst.BaseExpression) -> str:
    return node.value if isinstance(node, cst.Name) else node.attr.value  # type: ignore[attr-defined]


class ReportLeftOutBranch(PythonDetectionKind):
    name = "report-left-out-branch"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.literal = self.take(options, "literal", str)
        self.names = frozenset(self.strings(options, "names"))
        if not self.names:
            raise RuleError("option 'names' must name what holds the device")

    def needles(self) -> tuple[str, ...]:
        return quoted(self.literal)

    def also_needs(self) -> tuple[str, ...]:
        return ("None",)  # the branch sets `self.<x> = None`

    finder_class = _LeftOutFinder


class _RaiseFinder(DetectionFinder):
    kind: ReportRaiseUnless

    def visit_If(self, node: cst.If) -> None:
        parts = _equality(node.test)
        if parts is None or not isinstance(parts[1], cst.NotEqual) or HELPER in self.code(node.test):
            return  # a ported check (`_lsync_port.device_type() != "cuda"`) means CUDA only on purpose
        if not any(_is_string(s, self.kind.literal) for s in (parts[0], parts[2])):
            return
        first = node.body.body[0] if isinstance(node.body, cst.IndentedBlock) and node.body.body else None
        if isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Raise):
            self.add(first.body[0])


class ReportRaiseUnless(PythonDetectionKind):
    name = "report-raise-unless"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.literal = self.take(options, "literal", str)

    def needles(self) -> tuple[str, ...]:
        return quoted(self.literal)

    finder_class = _RaiseFinder


class _SwitchFinder(DetectionFinder):
    kind: ReportUncheckedSwitch

    def visit_If(self, node: cst.If) -> None:
        if m.findall(node.body, self.kind.call) and HELPER not in self.code(node.test):
            self.add(node.test)


class ReportUncheckedSwitch(PythonDetectionKind):
    name = "report-unchecked-switch"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.method = self.take(options, "method", str)
        self.call = m.Call(func=m.Attribute(attr=m.Name(self.method)))

    def needles(self) -> tuple[str, ...]:
        return (self.method,)

    finder_class = _SwitchFinder
