"""replace-expression: one whole expression, compared by syntax tree, becomes another.

For CUDA idioms that are more than one call, such as the fp16 gate
`torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7` or the device choice
`"cuda" if torch.cuda.is_available() else "cpu"`. Matching compares Python ASTs, so quoting,
spacing and line breaks do not matter, but the spelling of names does: a pattern matches only the
code it names, never something merely similar.

Options:
  pattern     = 'torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7'
  replacement = '_lsync_port.fp16_supported()'     may use the helper as `_lsync_port.`
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape

_EMPTY = cst.Module(body=[])


class ReplaceExpressionCommand(RuleCommand["ReplaceExpression"]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # The pattern's node type is known only from the options: leave_<that type> is this rule.
        setattr(self, f"leave_{self.kind.pattern_type.__name__}", self._replace)

    def _replace(self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Any:
        kind = self.kind
        if _shape(_EMPTY.code_for_node(original_node)) != kind.pattern_shape:
            return updated_node
        new = cst.parse_expression(kind.replacement)
        if HELPER + "." in kind.replacement:
            self.require_helper()
        if getattr(original_node, "lpar", ()):
            new = new.with_changes(lpar=original_node.lpar, rpar=original_node.rpar)  # type: ignore[attr-defined]
        self.record(original_node, new, discards=original_node)
        return new


class ReplaceExpression(PythonRuleKind):
    name = "replace-expression"
    command = ReplaceExpressionCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.pattern = self.take(options, "pattern", str)
        self.replacement = self.take(options, "replacement", str)
        self.pattern_shape = _shape(self.pattern)
        if self.pattern_shape is None:
            raise RuleError(f"option 'pattern' is not a Python expression: {self.pattern!r}")
        if _shape(self.replacement) is None:
            raise RuleError(f"option 'replacement' is not a Python expression: {self.replacement!r}")
        self.pattern_type = type(cst.parse_expression(self.pattern.strip()))
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        names = re.findall(r"[A-Za-z_]\w*", self.pattern)
        return (max(names, key=len),)
