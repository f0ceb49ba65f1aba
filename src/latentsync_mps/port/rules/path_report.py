"""Detection-only kind about where a node writes or deletes (rule report-above-comfyui in
patches/findings/python.toml).

- report-path-above: a path that climbs `levels` folders up from `anchor` (an expression, such as
  `folder_paths.__file__`): `os.path.dirname` nested `levels` times around an expression that
  mentions the anchor (`os.path.abspath(...)` and the like in between), or `Path(...)` followed by
  `.parent` `levels` times or `.parents[levels - 1]`. ComfyUI's folder_paths.py lies in the ComfyUI
  root, so two levels up is the folder that holds ComfyUI: a node that deletes `temp` there
  deletes a folder of the user's, outside ComfyUI. Reported once, at the outermost expression.
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import RuleError, span_of, span_within
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind


class _PathAboveFinder(DetectionFinder):
    kind: ReportPathAbove

    def __init__(self, kind: ReportPathAbove, path: str) -> None:
        super().__init__(kind, path)
        self.spans: list[tuple[int, int, int, int]] = []

    def _report(self, node: cst.CSTNode) -> None:
        from libcst.metadata import PositionProvider

        span = span_of(self.get_metadata(PositionProvider, node))
        if not any(span_within(span, outer) for outer in self.spans):
            self.spans.append(span)
            self.add(node)

    def visit_Call(self, node: cst.Call) -> None:
        levels, inner = 0, node
        while isinstance(inner, cst.Call) and "os.path.dirname" in self.qualified(inner.func) and inner.args:
            levels += 1
            inner = inner.args[0].value
        if levels >= self.kind.levels and self.kind.anchor in self.code(inner):
            self._report(node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        levels, inner = 0, node
        while isinstance(inner, cst.Attribute) and inner.attr.value == "parent":
            levels += 1
            inner = inner.value
        if levels >= self.kind.levels and self.kind.anchor in self.code(inner):
            self._report(node)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        value = node.value
        if not (isinstance(value, cst.Attribute) and value.attr.value == "parents" and len(node.slice) == 1):
            return
        index = node.slice[0].slice
        if isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            if int(index.value.value) + 1 >= self.kind.levels and self.kind.anchor in self.code(value.value):
                self._report(node)


class ReportPathAbove(PythonDetectionKind):
    name = "report-path-above"
    finder_class = _PathAboveFinder

    def configure_match(self, options: dict[str, Any]) -> None:
        self.anchor = self.take(options, "anchor", str)
        self.levels = self.take(options, "levels", int, 2)
        if self.levels < 1:
            raise RuleError("option 'levels' must be 1 or more")

    def needles(self) -> tuple[str, ...]:
        return (self.anchor.partition(".")[0],)  # folder_paths: rarer than __file__
