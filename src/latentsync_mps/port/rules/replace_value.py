"""replace-value: a value in a named position becomes another expression.

For values that pin CUDA-era behaviour by name, such as LatentSync 1.0's hard-coded
`torch_dtype=torch.float16` / `weight_dtype=torch.float16`, `AlignRestore(dtype=torch.float16)`,
or whisper's `fp16: bool = True`. Positions: keyword arguments named in `names`, parameter
defaults named in `names`, assignments (plain or annotated) to a name in `names`, and, with
`to_positional`, the first argument of `.to(...)`. Values are compared by syntax tree, so only the
values listed match; `torch.float16 if fast else torch.float32` is a choice, not a pin, and stays.

Options:
  names         = ["dtype", "torch_dtype", "weight_dtype"]
  values        = ["torch.float16", "torch.half"]
  replacement   = "_lsync_port.dtype()"          may use the helper as `_lsync_port.`
  to_positional = false
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape

_EMPTY = cst.Module(body=[])


class ReplaceValueCommand(RuleCommand["ReplaceValue"]):
    def _swap(self, original: cst.BaseExpression | None) -> cst.BaseExpression | None:
        kind = self.kind
        if original is None or _shape(_EMPTY.code_for_node(original)) not in kind.value_shapes:
            return None
        if HELPER + "." in kind.replacement:
            self.require_helper()
        new = cst.parse_expression(kind.replacement)
        self.record(original, new)
        return new

    def leave_Arg(self, original_node: cst.Arg, updated_node: cst.Arg) -> cst.Arg:
        if original_node.keyword is not None and original_node.keyword.value in self.kind.names:
            new = self._swap(original_node.value)
            if new is not None:
                return updated_node.with_changes(value=new)
        return updated_node

    def leave_Param(self, original_node: cst.Param, updated_node: cst.Param) -> cst.Param:
        if original_node.name.value in self.kind.names:
            new = self._swap(original_node.default)
            if new is not None:
                return updated_node.with_changes(default=new)
        return updated_node

    def leave_AnnAssign(self, original_node: cst.AnnAssign, updated_node: cst.AnnAssign) -> cst.AnnAssign:
        if m.matches(original_node.target, m.Name()) and original_node.target.value in self.kind.names:
            new = self._swap(original_node.value)
            if new is not None:
                return updated_node.with_changes(value=new)
        return updated_node

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        targets = [t.target for t in original_node.targets]
        if all(isinstance(t, cst.Name) and t.value in self.kind.names for t in targets):
            new = self._swap(original_node.value)
            if new is not None:
                return updated_node.with_changes(value=new)
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        kind = self.kind
        if not kind.to_positional or not m.matches(original_node.func, m.Attribute(attr=m.Name("to"))):
            return updated_node
        if not original_node.args or original_node.args[0].keyword is not None or original_node.args[0].star:
            return updated_node
        new = self._swap(original_node.args[0].value)
        if new is None:
            return updated_node
        args = list(updated_node.args)
        args[0] = args[0].with_changes(value=new)
        return updated_node.with_changes(args=args)


class ReplaceValue(PythonRuleKind):
    name = "replace-value"
    command = ReplaceValueCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.names = frozenset(self.take(options, "names", list))
        values = self.take(options, "values", list)
        self.value_shapes = {_shape(str(v)) for v in values}
        if None in self.value_shapes or not values:
            raise RuleError(f"option 'values' must list Python expressions: {values!r}")
        self.replacement = self.take(options, "replacement", str)
        if _shape(self.replacement) is None:
            raise RuleError(f"option 'replacement' is not a Python expression: {self.replacement!r}")
        if _shape(self.replacement) in self.value_shapes:
            raise RuleError("option 'replacement' is one of the values it replaces")
        self.to_positional = self.take(options, "to_positional", bool, False)
        # A file can match only if it names a value; unless the values are bare constants
        # (True, None), their last word ("float16") is the rarer text to look for.
        words = {re.findall(r"[A-Za-z_]\w*", str(v))[-1] for v in values if re.findall(r"[A-Za-z_]\w*", str(v))}
        constants = {"True", "False", "None"}
        self.needle_names = tuple(sorted(self.names if not words or words & constants else words))
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return self.needle_names
