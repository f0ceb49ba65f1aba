"""upcast-call: run a call in float32 and cast the result back to the input's dtype.

fp16 nearest upsampling through `F.interpolate` gave black masks on MPS (LatentSync issue 48).
The rewrite is `F.interpolate(x.to(torch.float32), ...).to(x.dtype)`; an input that is not a
plain name is bound once with `:=` so that it is evaluated exactly once. On a float32 tensor both
`.to` calls return the tensor itself, so devices that do not need the fix pay nothing.

Calls are found by qualified name: `F.interpolate`, `torch.nn.functional.interpolate`,
`nn.functional.interpolate` and `from torch.nn.functional import interpolate as up` all match.
A call whose input already reads `<x>.to(torch.float32)` is left alone, so it never wraps twice.

Options:
  calls = ["torch.nn.functional.interpolate"]   qualified names of the calls to wrap
  dtype = "torch.float32"                        the dtype to compute in
"""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor

from latentsync_mps.port.rules.base import PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.names import ImportedNameProvider

# Holds a non-trivial input so that it is evaluated once (`(_lsync_in := f(x)).to(...)`).
BOUND_INPUT = "_lsync_in"


class UpcastCallCommand(RuleCommand["UpcastCall"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        kind = self.kind
        names = {q.name for q in self.get_metadata(ImportedNameProvider, original_node.func, set())}
        if not names & kind.calls:
            return updated_node
        position = _input_position(updated_node)
        if position is None:
            return updated_node
        arg = updated_node.args[position]
        if m.matches(arg.value, m.Call(func=m.Attribute(attr=m.Name("to")), args=[m.Arg(kind.dtype_matcher)])):
            return updated_node  # already computing in the target dtype

        if isinstance(arg.value, cst.Name):
            bound, reference = arg.value, arg.value
        else:
            reference = cst.Name(BOUND_INPUT)
            bound = cst.NamedExpr(target=reference, value=arg.value, lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        upcast = cst.Call(func=cst.Attribute(value=bound, attr=cst.Name("to")), args=[cst.Arg(kind.dtype_expr)])
        args = list(updated_node.args)
        args[position] = arg.with_changes(value=upcast)
        inner = updated_node.with_changes(args=args, lpar=[], rpar=[])
        new = cst.Call(
            func=cst.Attribute(value=inner, attr=cst.Name("to")),
            args=[cst.Arg(cst.Attribute(value=reference, attr=cst.Name("dtype")))],
            lpar=updated_node.lpar,
            rpar=updated_node.rpar,
        )
        AddImportsVisitor.add_needed_import(self.context, kind.dtype_module)
        self.record(original_node, new)
        return new


def _input_position(call: cst.Call) -> int | None:
    """Index of the tensor argument: the first positional one, or the `input=` keyword."""
    for index, arg in enumerate(call.args):
        if arg.star:
            return None  # *args: the input cannot be told apart safely
        if arg.keyword is None:
            return index
        if arg.keyword.value == "input":
            return index
    return None


class UpcastCall(PythonRuleKind):
    name = "upcast-call"
    command = UpcastCallCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.calls = frozenset(self.take(options, "calls", list, ["torch.nn.functional.interpolate"]))
        dtype = self.take(options, "dtype", str, "torch.float32")
        module, _, attr = dtype.rpartition(".")
        if not module or not attr.isidentifier():
            raise RuleError(f"option 'dtype' must be a dotted name such as torch.float32, not {dtype!r}")
        self.dtype_module = module
        self.dtype_expr = cst.parse_expression(dtype)
        self.dtype_matcher = m.Attribute(value=m.Name(module), attr=m.Name(attr))
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted({name.rpartition(".")[2] for name in self.calls}))
