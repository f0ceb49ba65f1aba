"""call-argument: set a keyword argument of one call to a new value.

For arguments whose value is CUDA-only, such as ONNX Runtime's
`providers=["CUDAExecutionProvider"]` or InsightFace's `ctx_id=cuda_to_int(device)`, which
raises for any device other than cuda. The callee is named either by qualified name
(`call = "insightface.app.FaceAnalysis"`, import aliases followed; a name without dots, such
as `call = "ImageProcessor"`, also matches a bare call of that name, which a relative import
leaves unresolved) or by method name
(`method = "prepare"`, for calls on objects whose type the code does not show).

Options:
  call | method  which calls
  keyword        the argument to set
  value          its new value, a Python expression (may use `_lsync_port.`)
  only_if        optional: rewrite only when the current value has this shape (AST compared)
  add            also add the keyword when the call lacks it (default false)
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape
from latentsync_mps.port.rules.names import ImportedNameProvider


class CallArgumentCommand(RuleCommand["CallArgument"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        kind = self.kind
        if not self._is_target(original_node):
            return updated_node
        empty = cst.Module(body=[])
        for index, arg in enumerate(updated_node.args):
            if arg.keyword is None or arg.keyword.value != kind.keyword:
                continue
            current = _shape(empty.code_for_node(arg.value))
            if current == kind.value_shape:
                return updated_node  # already set
            if kind.only_if_shape is not None and current != kind.only_if_shape:
                return updated_node
            args = list(updated_node.args)
            args[index] = arg.with_changes(value=self._value())
            new = updated_node.with_changes(args=args)
            old_value = original_node.args[index].value
            self.record(old_value, args[index].value, discards=old_value)
            return new
        if kind.add:
            new_arg = cst.Arg(
                keyword=cst.Name(kind.keyword),
                value=self._value(),
                equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
                ),
            )
            args = list(updated_node.args)
            if args and args[-1].comma == cst.MaybeSentinel.DEFAULT:
                args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            new = updated_node.with_changes(args=[*args, new_arg])
            self.record(original_node, new)
            return new
        return updated_node

    def _value(self) -> cst.BaseExpression:
        kind = self.kind
        if HELPER + "." in kind.value:
            self.require_helper()
        return cst.parse_expression(kind.value)

    def _is_target(self, call: cst.Call) -> bool:
        kind = self.kind
        if kind.method is not None:
            return isinstance(call.func, cst.Attribute) and call.func.attr.value == kind.method
        names = {q.name for q in self.get_metadata(ImportedNameProvider, call.func, set())}
        if "." not in kind.call and isinstance(call.func, cst.Name) and call.func.value == kind.call:
            return True
        return kind.call in names


class CallArgument(PythonRuleKind):
    name = "call-argument"
    command = CallArgumentCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.call: str | None = self.take(options, "call", str, None)
        self.method: str | None = self.take(options, "method", str, None)
        if (self.call is None) == (self.method is None):
            raise RuleError("give exactly one of the options 'call' and 'method'")
        self.keyword = self.take(options, "keyword", str)
        self.value = self.take(options, "value", str)
        self.value_shape = _shape(self.value)
        if self.value_shape is None:
            raise RuleError(f"option 'value' is not a Python expression: {self.value!r}")
        only_if = self.take(options, "only_if", str, None)
        self.only_if_shape = None if only_if is None else _shape(only_if)
        if only_if is not None and self.only_if_shape is None:
            raise RuleError(f"option 'only_if' is not a Python expression: {only_if!r}")
        self.add = self.take(options, "add", bool, False)
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return (self.method or self.call.rpartition(".")[2],)  # type: ignore[union-attr]
