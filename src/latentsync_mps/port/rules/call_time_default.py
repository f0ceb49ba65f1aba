"""call-time-default: a parameter default that depends on the device is decided when called.

A default is evaluated once, when the module is imported: `weight_dtype=torch.float16`, ported to
`weight_dtype=_lsync_port.dtype()`, would fix the dtype before ComfyUI or a notebook had set
LATENTSYNC_DTYPE. This kind turns such a default into `None` and decides it at the top of the body:

    def __call__(self, weight_dtype=torch.float16):       def __call__(self, weight_dtype=None):
        ...                                          ->        if weight_dtype is None:
                                                                   weight_dtype = _lsync_port.dtype()
                                                               ...

The original default is matched (AST compared), so the rewrite of the default by another rule
(fp16-hardcoded, device-literal) is superseded, not stacked. The decision may name other
parameters (`_lsync_port.restore_dtype(device)`): it runs inside the function. A function whose
default is already `None` is left alone, so applying twice changes nothing.

Options:
  param   = "weight_dtype"                       the parameter
  values  = ["torch.float16", "torch.half"]      the defaults that are moved
  decide  = "_lsync_port.dtype()"                what the body computes instead
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape

_EMPTY = cst.Module(body=[])


class CallTimeDefaultCommand(RuleCommand["CallTimeDefault"]):
    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        kind = self.kind
        original_params = [*original_node.params.params, *original_node.params.kwonly_params]
        target = next((p for p in original_params if p.name.value == kind.param and p.default is not None), None)
        if target is None or _shape(_EMPTY.code_for_node(target.default)) not in kind.value_shapes:
            return updated_node
        params = updated_node.params

        def moved(param: cst.Param) -> cst.Param:
            return param.with_changes(default=cst.Name("None")) if param.name.value == kind.param else param

        new_params = params.with_changes(
            params=[moved(p) for p in params.params], kwonly_params=[moved(p) for p in params.kwonly_params]
        )
        decide = cst.parse_statement(f"if {kind.param} is None:\n    {kind.param} = {kind.decide}\n")
        if HELPER + "." in kind.decide:
            self.require_helper()
        body = updated_node.body
        if not isinstance(body, cst.IndentedBlock):
            return updated_node  # a one-line body (`def f(x=...): ...`): nothing to insert into
        statements = list(body.body)
        at = 1 if statements and _is_docstring(statements[0]) else 0
        statements.insert(at, decide)
        new = updated_node.with_changes(params=new_params, body=body.with_changes(body=statements))
        new_target = next(p for p in [*new_params.params, *new_params.kwonly_params] if p.name.value == kind.param)
        self.record(target, new_target, discards=target.default)
        return new


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


class CallTimeDefault(PythonRuleKind):
    name = "call-time-default"
    command = CallTimeDefaultCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.param = self.take(options, "param", str)
        if not self.param.isidentifier():
            raise RuleError(f"option 'param' must be a parameter name, not {self.param!r}")
        values = self.take(options, "values", list)
        self.value_shapes = {_shape(v) for v in values}
        if not values or None in self.value_shapes:
            raise RuleError("option 'values' must list Python expressions")
        self.decide = self.take(options, "decide", str)
        if _shape(self.decide) is None:
            raise RuleError(f"option 'decide' is not a Python expression: {self.decide!r}")
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return (self.param,)
