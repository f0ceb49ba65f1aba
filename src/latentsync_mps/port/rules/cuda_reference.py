"""Detection-only kinds about torch's CUDA namespaces (rules in patches/findings/python.toml).

- report-cuda-reference: every use of a name under torch.cuda, torch.backends.cuda and .cudnn
  (`names`: exact names, `prefixes`: everything below), called or not, except in import
  statements: complete by construction, so a torch release that adds one is covered. One
  reference is reported once, at its outermost node (`torch.cuda.amp.autocast(...)`: the call).
  What each name does on a Mac and its fix come from `texts` (a file of the rule pack,
  patches/torch-cuda.toml: per name, per name shape, default), and so does the finding kind
  (`finding` is the default's). Takes `guard`.
- report-assignment: an assignment (`=`, `+=`, ...) to a name under one of `prefixes`
  (`torch.backends.cudnn.benchmark = True`): the statement is reported. Takes `guard`.
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from latentsync_mps.pack.cuda_texts import CudaTexts
from latentsync_mps.port.rules.base import RuleError
from latentsync_mps.port.rules.report import GuardedFinder, PythonDetectionKind


class _Names:
    """A name matcher: exactly one of `names`, or below one of `prefixes` (which end with a dot)."""

    def __init__(self, names: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        if any(not p.endswith(".") for p in prefixes):
            raise RuleError("every entry of 'prefixes' ends with a dot ('torch.cuda.')")
        self.names, self.prefixes = frozenset(names), prefixes

    def __call__(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)

    def first(self, names: set[str]) -> str | None:
        return next((n for n in sorted(names) if self(n)), None)

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted({n.rstrip(".").rpartition(".")[2] for n in (*self.names, *self.prefixes)}))


class _ReferenceFinder(GuardedFinder):
    kind: ReportCudaReference

    def __init__(self, kind: PythonDetectionKind, path: str) -> None:
        super().__init__(kind, path)
        self.imports = 0  # inside an import statement: names there are bindings, not uses
        self.seen: set[int] = set()  # Name/Attribute nodes inside a reference already reported

    def _reference(self, report: cst.CSTNode, name_node: cst.BaseExpression) -> bool:
        if self.imports or id(name_node) in self.seen:
            return False
        name = self.kind.matches.first(self.qualified(name_node))
        if name is None:
            return False
        node: cst.BaseExpression = name_node
        while True:  # the names inside its attribute chain are part of this one reference
            self.seen.add(id(node))
            if not isinstance(node, cst.Attribute):
                break
            node = node.value
        if not self.guarded:  # inside the guard it runs on CUDA only
            text = self.kind.texts(name, self.kind.finding)
            why = f"{name} {text.why}"
            self.add(report, name_node, finding=text.kind, severity=text.severity, why=why, fix=text.fix)
        return True

    def visit_Call(self, node: cst.Call) -> None:
        self._reference(node, node.func)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.seen.add(id(node.attr))  # `x.empty_cache`: an attribute name, not an imported one
        self._reference(node, node)

    def visit_Name(self, node: cst.Name) -> None:
        self._reference(node, node)

    def visit_Import(self, node: cst.Import) -> None:
        self.imports += 1

    def leave_Import(self, original_node: cst.Import) -> None:
        self.imports -= 1

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self.imports += 1

    def leave_ImportFrom(self, original_node: cst.ImportFrom) -> None:
        self.imports -= 1


class ReportCudaReference(PythonDetectionKind):
    name = "report-cuda-reference"
    own_texts = False

    def configure_match(self, options: dict[str, Any]) -> None:
        self.matches = _Names(self.strings(options, "names"), self.strings(options, "prefixes"))
        self.take(options, "texts", str)
        self.guard_shape = self.guard_option(options)
        # The file `texts` names, read by the pack when it loaded the rule (pack/cuda_texts.py).
        self.texts: CudaTexts = self.rule.inputs.get("texts")

    def needles(self) -> tuple[str, ...]:
        return self.matches.needles()

    finder_class = _ReferenceFinder


class _AssignmentFinder(GuardedFinder):
    kind: ReportAssignment

    def _check(self, statement: cst.CSTNode, target: cst.BaseExpression) -> None:
        if any(name.startswith(self.kind.prefixes) for name in self.qualified(target)) and not self.guarded:
            self.add(statement, target)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._check(node, target.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._check(node, node.target)


class ReportAssignment(PythonDetectionKind):
    name = "report-assignment"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.prefixes = self.strings(options, "prefixes")
        self.guard_shape = self.guard_option(options)
        if not self.prefixes:
            raise RuleError("option 'prefixes' must name what is assigned to")

    def needles(self) -> tuple[str, ...]:
        return _Names((), self.prefixes).needles()

    finder_class = _AssignmentFinder
