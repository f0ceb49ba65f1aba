"""One libcst pass over one file: every applicable rule and the CUDA finders, together.

The file is parsed once and its metadata (positions, qualified names) resolved once. A single
traversal then offers each node to every rule, lowest `order` first, and to the finders, which
look at the *original* nodes. A finding that a rewrite covered is converted; what is left is
residue. Imports the rewrites need are added at the end (libcst's AddImportsVisitor).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor
from libcst.metadata import MetadataWrapper

from .findings import Finding, PythonFinder
from .rules.base import Change, FileContext, PythonRuleKind, Rewrite, RuleCommand, span_within


@dataclass
class PassResult:
    code: bytes
    changes: list[Change]
    residue: list[Finding]  # findings of the original that no rewrite covered


class _CombinedPass(cst.CSTTransformer):
    """Forwards every visit and leave to each rule transformer and finder, in order."""

    def __init__(self, commands: Sequence[RuleCommand], finders: Sequence[cst.CSTVisitor]) -> None:
        super().__init__()
        self.commands = commands
        self.finders = finders

    def on_visit(self, node: cst.CSTNode) -> bool:
        for finder in self.finders:
            finder.on_visit(node)
        for command in self.commands:
            command.on_visit(node)
        return True

    def on_leave(self, original_node: cst.CSTNode, updated_node: Any) -> Any:
        for finder in self.finders:
            finder.on_leave(original_node)
        for command in self.commands:
            if not isinstance(updated_node, cst.CSTNode):
                break  # removed or flattened: nothing left for later rules
            updated_node = command.on_leave(original_node, updated_node)
        return updated_node


def run_pass(data: bytes | str, kinds: Sequence[PythonRuleKind], file: FileContext, find: bool = True) -> PassResult:
    """Rewrite `data` with `kinds` (already filtered to this file) and find what stays CUDA-only."""
    module = cst.parse_module(data)
    context = CodemodContext(filename=file.path)
    log: list[Rewrite] = []
    commands = [kind.command(context, kind, file, log) for kind in sorted(kinds, key=lambda k: k.order)]
    finders = [PythonFinder(file.path)] if find else []
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    dependencies = {dep for visitor in [*commands, *finders] for dep in visitor.get_inherited_dependencies()}
    metadata = wrapper.resolve_many(dependencies)
    for visitor in [*commands, *finders]:
        visitor.metadata = metadata  # what MetadataDependent.get_metadata reads
    new_module = module.visit(_CombinedPass(commands, finders))

    rewrites = _surviving(log)
    if rewrites and AddImportsVisitor.CONTEXT_KEY in context.scratch:
        new_module = AddImportsVisitor(context).transform_module(new_module)
    residue = [f for finder in finders for f in finder.found if not _covered(f, rewrites)]
    if not rewrites:
        return PassResult(module.bytes, [], residue)
    residue = _renumber(residue, module.code, new_module.code)
    return PassResult(new_module.bytes, [r.change for r in rewrites], residue)


def _surviving(log: list[Rewrite]) -> list[Rewrite]:
    """Drop rewrites inside a region that a later rewrite replaced wholesale."""
    # The log is in leave order (children before parents), so only a later entry can discard.
    return [
        r
        for i, r in enumerate(log)
        if not any(later.discards is not None and span_within(r.span, later.discards) for later in log[i + 1 :])
    ]


def _renumber(findings: list[Finding], old: str, new: str) -> list[Finding]:
    """Findings carry lines of the original; the report is about the rewritten file."""
    if not findings:
        return findings
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    shift: dict[int, int] = {}
    for tag, i1, i2, j1, _ in matcher.get_opcodes():
        for i in range(i1, i2):
            shift[i + 1] = j1 + (i - i1 if tag == "equal" else 0) + 1
    return [replace(f, line=shift.get(f.line, f.line)) for f in findings]


def _covered(finding: Finding, rewrites: list[Rewrite]) -> bool:
    return any(
        finding.span == r.span or (r.discards is not None and span_within(finding.span, r.discards)) for r in rewrites
    )
