"""replace-statement: one whole statement, compared by syntax tree, becomes another.

For CUDA-only control flow that no expression rewrite can fix, such as InsightFace's
`cuda_to_int`, which ends in `raise ValueError(f"Device type must be 'cuda', got: ...")` for
every other device. The pattern may be a compound statement (an `if` with its body); it matches
code with the same syntax tree whatever its spacing, quoting or comments. Comment lines above
the statement are kept; comments inside a replaced compound statement go with it.

Options:
  pattern     = 'raise ValueError(f"Device type must be ...")'
  replacement = 'return _lsync_port.onnx_ctx_id(cuda_str)'      may use the helper as `_lsync_port.`
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError

_EMPTY = cst.Module(body=[])
_STATEMENTS = (cst.SimpleStatementLine, cst.BaseCompoundStatement)


def statement_shape(code: str) -> str | None:
    """The AST of exactly one statement, or None."""
    try:
        body = ast.parse(textwrap.dedent(code).strip("\n")).body
    except SyntaxError:
        return None
    return ast.dump(body[0]) if len(body) == 1 else None


class ReplaceStatementCommand(RuleCommand["ReplaceStatement"]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # The pattern's statement type is known only from the options: leave_<that type> is this rule.
        setattr(self, f"leave_{self.kind.pattern_type.__name__}", self._replace)

    def _replace(self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Any:
        kind = self.kind
        assert isinstance(original_node, _STATEMENTS)
        code = _EMPTY.code_for_node(original_node.with_changes(leading_lines=()))
        if statement_shape(code) != kind.pattern_shape:
            return updated_node
        if HELPER + "." in kind.replacement:
            self.require_helper()
        new = cst.parse_statement(kind.replacement).with_changes(leading_lines=original_node.leading_lines)
        if isinstance(original_node, cst.SimpleStatementLine) and isinstance(new, cst.SimpleStatementLine):
            new = new.with_changes(trailing_whitespace=original_node.trailing_whitespace)
        self.record(original_node, new, discards=original_node)
        return new


class ReplaceStatement(PythonRuleKind):
    name = "replace-statement"
    command = ReplaceStatementCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.pattern = textwrap.dedent(self.take(options, "pattern", str)).strip("\n")
        self.replacement = textwrap.dedent(self.take(options, "replacement", str)).strip("\n") + "\n"
        self.pattern_shape = statement_shape(self.pattern)
        if self.pattern_shape is None:
            raise RuleError(f"option 'pattern' is not one Python statement: {self.pattern!r}")
        if statement_shape(self.replacement) is None:
            raise RuleError(f"option 'replacement' is not one Python statement: {self.replacement!r}")
        if statement_shape(self.replacement) == self.pattern_shape:
            raise RuleError("option 'replacement' is the pattern itself")
        self.pattern_type = type(cst.parse_statement(self.pattern + "\n"))
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        words = re.findall(r"[A-Za-z_]\w*", self.pattern)
        return (max(words, key=len),)
