"""guard-statement: CUDA-only assignments run only on CUDA.

For backend flags with no MPS counterpart, such as `torch.backends.cuda.matmul.allow_tf32 = True`
or `torch.backends.cudnn.benchmark = True` in the ComfyUI wrapper: on a Mac they do nothing, so
the code around them (tuned for an NVIDIA GPU) is better off not pretending; on NVIDIA they stay
exactly as they were. Consecutive matching statements share one guard:

    torch.backends.cudnn.benchmark = True          if _lsync_port.device_type() == "cuda":
                                           ->          torch.backends.cudnn.benchmark = True

Assignment targets are found by qualified name (import aliases followed). Statements already
inside an `if` with the guard's test are left alone, so applying twice changes nothing.

Options:
  targets = ["torch.backends.cuda.", "torch.backends.cudnn."]   qualified-name prefixes
  guard   = '_lsync_port.device_type() == "cuda"'
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import HELPER, PythonRuleKind, RuleCommand, RuleError
from latentsync_mps.port.rules.base import expression_shape as _shape
from latentsync_mps.port.rules.names import ImportedNameProvider

_EMPTY = cst.Module(body=[])


class GuardStatementCommand(RuleCommand["GuardStatement"]):
    METADATA_DEPENDENCIES = (*RuleCommand.METADATA_DEPENDENCIES, ImportedNameProvider)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guarded: list[bool] = []  # one entry per enclosing `if`: is its test the guard?

    def visit_If(self, node: cst.If) -> None:
        self._guarded.append(_shape(_EMPTY.code_for_node(node.test)) == self.kind.guard_shape)

    def leave_If(self, original_node: cst.If, updated_node: cst.If) -> cst.If:
        self._guarded.pop()
        return updated_node

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock) -> Any:
        return updated_node.with_changes(body=self._guard_runs(original_node.body, updated_node.body))

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        return updated_node.with_changes(body=self._guard_runs(original_node.body, updated_node.body))

    def _matches(self, statement: cst.CSTNode) -> bool:
        if not isinstance(statement, cst.SimpleStatementLine) or not statement.body:
            return False
        return all(self._is_flag(small) for small in statement.body)

    def _is_flag(self, small: cst.BaseSmallStatement) -> bool:
        if isinstance(small, cst.Assign):
            targets = [t.target for t in small.targets]
        elif isinstance(small, cst.AugAssign | cst.AnnAssign):
            targets = [small.target]
        else:
            return False
        for target in targets:
            names = {q.name for q in self.get_metadata(ImportedNameProvider, target, set())}
            if not any(name.startswith(self.kind.targets) for name in names):
                return False
        return True

    def _guard_runs(self, originals: Any, updated: Any) -> list[Any]:
        if any(self._guarded) or len(originals) != len(updated):
            return list(updated)
        out: list[Any] = []
        run: list[tuple[cst.SimpleStatementLine, cst.SimpleStatementLine]] = []

        def flush() -> None:
            if not run:
                return
            first = run[0][1]
            body = [run[0][1].with_changes(leading_lines=()), *(new for _, new in run[1:])]
            guard = cst.If(
                test=cst.parse_expression(self.kind.guard),
                body=cst.IndentedBlock(body=body),
                leading_lines=first.leading_lines,
            )
            for original, _ in run:
                for small in original.body:
                    self.record(small, guard)
            out.append(guard)
            run.clear()

        for original, new in zip(originals, updated, strict=True):
            if self._matches(original):
                run.append((original, new))
                continue
            flush()
            out.append(new)
        flush()
        if any(isinstance(node, cst.If) for node in out) and HELPER + "." in self.kind.guard:
            self.require_helper()
        return out


class GuardStatement(PythonRuleKind):
    name = "guard-statement"
    command = GuardStatementCommand

    def configure(self, options: dict[str, Any]) -> None:
        self.targets = tuple(self.take(options, "targets", list))
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise RuleError("option 'targets' must list qualified-name prefixes")
        self.guard = self.take(options, "guard", str, '_lsync_port.device_type() == "cuda"')
        self.guard_shape = _shape(self.guard)
        if self.guard_shape is None:
            raise RuleError(f"option 'guard' is not a Python expression: {self.guard!r}")
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted({t.rstrip(".").rpartition(".")[2] for t in self.targets}))
