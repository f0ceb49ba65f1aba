"""device-literal: `"cuda"` / `"cuda:N"` in a device position becomes `_lsync_port.device()`.

Device positions: the keywords named in `keywords` (default `device=` and `map_location=`), the
first argument of `.to(...)` and of `torch.device(...)`, a parameter default or an assignment whose
name is in `keywords`, and the positional arguments listed in `positional`. `.cuda()` becomes
`.to(_lsync_port.device())`; `.cuda(1)`, `.cuda(device="cuda:1", non_blocking=True)` keep the
index as the preferred CUDA device and the keywords `.to()` also takes (a non-literal device is
left for the finders to report). An f-string such as `f"cuda:{gpu_id}"` is kept as the
preferred device for CUDA users: `_lsync_port.device(f"cuda:{gpu_id}")`. Everything else that
merely *mentions* cuda (docstrings, log messages, `device == "cuda"` comparisons) is left
alone: those are text, not a device choice.

Options:
  keywords   = ["device", "map_location"]    names that hold a device
  positional = ["VideoProcessor:1"]           `callee:index` pairs of positional device arguments
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst
import libcst.matchers as m

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.names import ImportedNameProvider

CUDA_LITERAL = re.compile(r"cuda(:\d+)?")


def cuda_literal(node: cst.CSTNode) -> str | None:
    """The device string if `node` is a plain "cuda" / "cuda:N" string literal."""
    if isinstance(node, cst.SimpleString) and not node.prefix.strip("rRuU"):
        value = node.evaluated_value
        if isinstance(value, str) and CUDA_LITERAL.fullmatch(value):
            return value
    return None


def cuda_fstring(node: cst.CSTNode) -> bool:
    """True for an f-string that spells a CUDA device, such as f"cuda:{gpu_id}"."""
    if not isinstance(node, cst.FormattedString) or not node.parts:
        return False
    first = node.parts[0]
    if not isinstance(first, cst.FormattedStringText):
        return False
    return first.value == "cuda:" or (first.value == "cuda" and len(node.parts) == 1)


def is_device_move(func: cst.BaseExpression, qualified: set[str]) -> bool:
    """Is this callee (with its qualified names) a device move, whose first argument is a device:
    `.to(...)` or `torch.device(...)`? Shared by this kind and the finder report-cuda-literal."""
    return m.matches(func, m.Attribute(attr=m.Name("to"))) or "torch.device" in qualified


class DeviceLiteralCommand(RuleCommand["DeviceLiteral"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def _device_call(self, literal: str) -> cst.BaseExpression:
        # "cuda:1" keeps its index for CUDA users; "cuda" needs no hint.
        return self.helper("device()" if literal == "cuda" else f'device("{literal}")')

    def _replace_literal(self, original: cst.CSTNode, value: cst.BaseExpression) -> cst.BaseExpression | None:
        literal = cuda_literal(value)
        if literal is None:
            if not cuda_fstring(value):
                return None
            self.require_helper()
            new = cst.Call(func=cst.parse_expression(f"{HELPER}.device"), args=[cst.Arg(value)])
            self.record(original, new)
            return new
        new = self._device_call(literal)
        self.record(original, new)
        return new

    def leave_Arg(self, original_node: cst.Arg, updated_node: cst.Arg) -> cst.Arg:
        if original_node.keyword is not None and original_node.keyword.value in self.kind.keywords:
            new = self._replace_literal(original_node.value, updated_node.value)
            if new is not None:
                return updated_node.with_changes(value=new)
        return updated_node

    def leave_Param(self, original_node: cst.Param, updated_node: cst.Param) -> cst.Param:
        if original_node.name.value in self.kind.keywords and original_node.default is not None:
            new = self._replace_literal(original_node.default, updated_node.default)
            if new is not None:
                return updated_node.with_changes(default=new)
        return updated_node

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        names = [t.target for t in original_node.targets]
        if all(isinstance(n, cst.Name) and n.value in self.kind.keywords for n in names):
            new = self._replace_literal(original_node.value, updated_node.value)
            if new is not None:
                return updated_node.with_changes(value=new)
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        # `.cuda()`, `.cuda(0)`, `.cuda(device=1, non_blocking=True)`: the same move, to the
        # run-time device (a literal index stays the preferred CUDA device).
        move = _cuda_move(updated_node) if m.matches(original_node.func, m.Attribute(attr=m.Name("cuda"))) else None
        if move is not None:
            literal, kept = move
            func = updated_node.func
            assert isinstance(func, cst.Attribute)
            comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")) if kept else cst.MaybeSentinel.DEFAULT
            new = updated_node.with_changes(
                func=func.with_changes(attr=cst.Name("to")),
                args=[cst.Arg(self._device_call(literal), comma=comma), *kept],
            )
            self.record(original_node, new)
            return new
        index = self._positional_device_index(original_node)
        if index is not None and index < len(updated_node.args):
            arg = updated_node.args[index]
            if arg.keyword is None and arg.star == "":
                new = self._replace_literal(original_node.args[index].value, arg.value)
                if new is not None:
                    args = list(updated_node.args)
                    args[index] = arg.with_changes(value=new)
                    return updated_node.with_changes(args=args)
        return updated_node

    def _positional_device_index(self, call: cst.Call) -> int | None:
        names = {q.name for q in self.get_metadata(ImportedNameProvider, call.func, set())}
        if is_device_move(call.func, names):
            return 0
        callee = _callee_name(call.func)
        for name, index in self.kind.positional.items():
            if callee == name or name in names:
                return index
        return None


def _cuda_move(call: cst.Call) -> tuple[str, list[cst.Arg]] | None:
    """For `x.cuda(...)`: the device it names ("cuda", "cuda:N") and the arguments `.to()` keeps
    (non_blocking, memory_format); None when the device is not a literal (then it is reported)."""
    literal, kept = "cuda", []
    for index, arg in enumerate(call.args):
        keyword = arg.keyword.value if arg.keyword is not None else None
        if arg.star:
            return None
        if (keyword is None and index == 0) or keyword == "device":
            if isinstance(arg.value, cst.Integer):
                literal = f"cuda:{arg.value.evaluated_value}"
            elif cuda_literal(arg.value) is not None:
                literal = str(cuda_literal(arg.value))
            elif not m.matches(arg.value, m.Name("None")):
                return None
        elif keyword in ("non_blocking", "memory_format"):
            kept.append(arg)
        else:
            return None
    return literal, kept


def _callee_name(func: cst.BaseExpression) -> str | None:
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


class DeviceLiteral(PythonRuleKind):
    name = "device-literal"
    command = DeviceLiteralCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.keywords = frozenset(self.take(options, "keywords", list, ["device", "map_location"]))
        self.positional: dict[str, int] = {}
        for entry in self.take(options, "positional", list, []):
            callee, sep, index = str(entry).rpartition(":")
            if not sep or not index.isdigit():
                raise RuleError(f"option 'positional': '{entry}' is not 'callee:index'")
            self.positional[callee] = int(index)
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return ("cuda",)
