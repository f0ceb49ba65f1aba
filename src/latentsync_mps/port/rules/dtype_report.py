"""Detection-only kinds about precision (rules in patches/findings/python.toml; the dtype names
and positions are their options).

- report-dtype-pin: a dtype named in `names` (qualified: `torch.float16`, `torch.half`) where a
  dtype is chosen: a keyword argument, parameter default or annotated assignment named in
  `positions`, or the first argument of `.to(...)`.
- report-default-on: a switch named `name` that defaults to on: `name=True` as a keyword or
  parameter default, `name: bool = True`, and `options.get("name", True)`.
- report-dtype-attribute: an attribute naming one of `names` (`torch.float64`), except in the
  branch of `a if <test> else b` whose test mentions `unless_choice` (`x if is_mps else float64`).
- report-numpy-move: `torch.from_numpy(a).to(device)` with no dtype: numpy arrays are float64 by
  default. Not reported when the array's expression mentions one of `unless_mentions`.
"""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import RuleError
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind

_TO = m.Attribute(attr=m.Name("to"))
_TRUE = m.Name("True")


def _last_parts(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted({name.rpartition(".")[2] for name in names}))


class _DtypePinFinder(DetectionFinder):
    kind: ReportDtypePin

    def _check(self, value: cst.BaseExpression) -> None:
        if self.qualified(value) & self.kind.names:
            self.add(value)

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value in self.kind.positions:
            self._check(node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is not None and node.name.value in self.kind.positions:
            self._check(node.default)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None and isinstance(node.target, cst.Name) and node.target.value in self.kind.positions:
            self._check(node.value)

    def leave_Call(self, original_node: cst.Call) -> None:
        args = original_node.args
        if m.matches(original_node.func, _TO) and args and args[0].keyword is None:
            self._check(args[0].value)


class ReportDtypePin(PythonDetectionKind):
    name = "report-dtype-pin"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.names = frozenset(self.strings(options, "names"))
        self.positions = frozenset(self.strings(options, "positions"))
        if not self.names or not self.positions:
            raise RuleError("options 'names' (dtypes) and 'positions' (where a dtype is chosen) are required")

    def needles(self) -> tuple[str, ...]:
        return _last_parts(self.names)

    finder_class = _DtypePinFinder


class _DefaultOnFinder(DetectionFinder):
    kind: ReportDefaultOn

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value == self.kind.switch and m.matches(node.value, _TRUE):
            self.add(node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is not None and node.name.value == self.kind.switch and m.matches(node.default, _TRUE):
            self.add(node.default)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if m.matches(node, m.AnnAssign(target=m.Name(self.kind.switch), value=_TRUE)):
            self.add(node.value)  # type: ignore[arg-type]

    def visit_Call(self, node: cst.Call) -> None:
        if m.matches(node, m.Call(func=m.Attribute(attr=m.Name("get")), args=[m.Arg(m.SimpleString()), m.Arg(_TRUE)])):
            if node.args[0].value.evaluated_value == self.kind.switch:  # type: ignore[attr-defined]
                self.add(node.args[1].value)


class ReportDefaultOn(PythonDetectionKind):
    name = "report-default-on"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.switch = self.take(options, "name", str)

    def needles(self) -> tuple[str, ...]:
        return (self.switch,)

    finder_class = _DefaultOnFinder


class _DtypeAttributeFinder(DetectionFinder):
    kind: ReportDtypeAttribute

    def __init__(self, kind: PythonDetectionKind, path: str) -> None:
        super().__init__(kind, path)
        self.choices: list[bool] = []  # per enclosing `a if test else b`: does the test mention the choice?

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self.choices.append(self.kind.unless_choice in self.code(node.test))

    def leave_IfExp(self, original_node: cst.IfExp) -> None:
        self.choices.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if self.qualified(node) & self.kind.names and not any(self.choices):
            self.add(node)


class ReportDtypeAttribute(PythonDetectionKind):
    name = "report-dtype-attribute"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.names = frozenset(self.strings(options, "names"))
        self.unless_choice = self.take(options, "unless_choice", str)
        if not self.names:
            raise RuleError("option 'names' must name the dtypes")

    def needles(self) -> tuple[str, ...]:
        return _last_parts(self.names)

    finder_class = _DtypeAttributeFinder


class _NumpyMoveFinder(DetectionFinder):
    kind: ReportNumpyMove

    def leave_Call(self, original_node: cst.Call) -> None:
        node = original_node
        if not m.matches(node.func, _TO):
            return
        receiver = node.func.value  # type: ignore[attr-defined]
        if not (isinstance(receiver, cst.Call) and self.kind.source in self.qualified(receiver.func)):
            return
        keywords = {a.keyword.value for a in node.args if a.keyword is not None}
        positional = [a for a in node.args if a.keyword is None]
        if "dtype" in keywords or len(positional) > 1 or not node.args:
            return  # a dtype is given, or nothing is moved
        inner = self.code(receiver)
        if not any(word in inner for word in self.kind.unless_mentions):
            self.add(node)


class ReportNumpyMove(PythonDetectionKind):
    name = "report-numpy-move"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.source = self.take(options, "source", str)
        self.unless_mentions = self.strings(options, "unless_mentions")

    def needles(self) -> tuple[str, ...]:
        return (self.source.rpartition(".")[2],)

    def also_needs(self) -> tuple[str, ...]:
        return (".to(",)  # the move

    finder_class = _NumpyMoveFinder
