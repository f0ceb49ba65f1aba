"""drop-unused-import: a module-level import that nothing uses after the port is removed.

ComfyUI's own requirements no longer list torchaudio, and the wrapper's `nodes.py` imports it at
module level, so ComfyUI cannot even load the node without it. Once the other rules have sent its
calls to the runtime helper (`torchaudio.save` -> `_lsync_port.save_audio`, ...), the import does
nothing but fail; this kind removes it then, and only then: where a use is left (a call no rule
knows), the import stays and the finder report-import reports it, naming the file.

    import os                                import os
    import torchaudio              ->        import math
    import math

It runs when the whole module has been rewritten (at the module's end), on the module's own
top-level statements, or with `anywhere` on imports inside functions and blocks too (a name that
nothing in the whole module reads any more); `import a, torchaudio` keeps `a`. Comment lines above
a removed statement stay above the next one; a block left empty gets `pass`.

Options:
  modules = ["torchaudio"]      the modules, imported plainly (`import torchaudio`, `as` allowed),
                                and their submodules (`import torchaudio.functional as F`)
  anywhere = false              also imports inside functions and blocks
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import PositionProvider

from latentsync_mps.port.rules.base import Change, PythonRuleKind, Rewrite, RuleCommand, RuleError, span_of
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind


def bound_name(alias: cst.ImportAlias, modules: frozenset[str]) -> str | None:
    """The name `import <module> [as x]` binds, for one of `modules`; None for anything else."""
    full = get_full_name_for_node(alias.name)
    if full is None or not any(full == m or full.startswith(f"{m}.") for m in modules):
        return None
    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
        return alias.asname.name.value
    return full.partition(".")[0]


def _imports_of(statement: cst.CSTNode, modules: frozenset[str]) -> list[tuple[cst.Import, str]]:
    if not isinstance(statement, cst.SimpleStatementLine):
        return []
    found = []
    for small in statement.body:
        if isinstance(small, cst.Import):
            names = [bound_name(alias, modules) for alias in small.names]
            found += [(small, name) for name in names if name is not None]
    return found


class _Uses(cst.CSTVisitor):
    """The names read anywhere outside import statements."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


class DropUnusedImportCommand(RuleCommand["DropUnusedImport"]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.blocks = 0  # indented blocks around the node being visited
        self.originals: list[cst.SimpleStatementLine] = []  # the import lines in reach, in order

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self.blocks += 1

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock) -> Any:
        self.blocks -= 1
        return updated_node

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        if (self.kind.anywhere or self.blocks == 0) and _imports_of(node, self.kind.modules):
            self.originals.append(node)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self.originals:
            return updated_node
        uses = _Uses()
        updated_node.visit(uses)
        unused = {name for line in self.originals for _, name in _imports_of(line, self.kind.modules)} - uses.names
        if not unused:
            return updated_node
        return updated_node.visit(_Remove(self, unused))

    def without(self, line: cst.SimpleStatementLine, unused: set[str]) -> cst.SimpleStatementLine | None:
        """`line` without the imports that bind an unused name (None: nothing left), noted."""
        original = self.take_original(line)
        kept = [new for small in line.body if (new := self._without(small, unused)) is not None]
        if kept:
            new = line.with_changes(body=_last_without_semicolon(kept))
            self._note(original, cst.Module(body=[]).code_for_node(new).strip())
            return new
        self._note(original, "(removed: nothing uses it after the port)")
        return None

    def take_original(self, line: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
        """The parsed line that `line` (of the rewritten module) was: the first one not yet taken with
        the same code (no rule rewrites import lines, and blocks are not left in source order)."""
        code = _code(line)
        index = next(i for i, original in enumerate(self.originals) if _code(original) == code)
        return self.originals.pop(index)

    def _without(self, small: cst.BaseSmallStatement, unused: set[str]) -> cst.BaseSmallStatement | None:
        """`small` without the aliases that bind an unused name; None when none is left."""
        if not isinstance(small, cst.Import):
            return small
        names = [alias for alias in small.names if bound_name(alias, self.kind.modules) not in unused]
        if not names:
            return None
        if len(names) == len(small.names):
            return small
        return small.with_changes(names=[*names[:-1], names[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)])

    def _note(self, original: cst.CSTNode, after: str) -> None:
        position = self.get_metadata(PositionProvider, original)
        before = " ".join(cst.Module(body=[]).code_for_node(original).split())
        change = Change(self.kind.rule.id, self.file.path, position.start.line, before, after)
        self.log.append(Rewrite(change, span_of(position), span_of(position)))


class _Remove(cst.CSTTransformer):
    """Takes the unused imports out of the rewritten module, in the order they were visited; comment
    lines above a removed statement move to the next one, and an emptied block gets `pass`."""

    def __init__(self, command: DropUnusedImportCommand, unused: set[str]) -> None:
        super().__init__()
        self.command, self.unused = command, unused
        self.blocks = 0

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self.blocks += 1

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock) -> Any:
        body = self._filter(updated_node.body)  # while self.blocks counts this block
        self.blocks -= 1
        return updated_node.with_changes(body=body or [cst.SimpleStatementLine([cst.Pass()])])

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        return updated_node.with_changes(body=self._filter(updated_node.body))

    def _filter(self, statements: Sequence[cst.BaseStatement]) -> list[cst.BaseStatement]:
        kind = self.command.kind
        out: list[cst.BaseStatement] = []
        carried: tuple[cst.EmptyLine, ...] = ()
        for statement in statements:
            if carried:
                statement = statement.with_changes(leading_lines=(*carried, *statement.leading_lines))
                carried = ()
            in_reach = kind.anywhere or self.blocks == 0
            imports = _imports_of(statement, kind.modules) if in_reach else []
            if not any(name in self.unused for _, name in imports):
                if imports:
                    self.command.take_original(statement)  # in reach and kept: used
                out.append(statement)
                continue
            assert isinstance(statement, cst.SimpleStatementLine)
            new = self.command.without(statement, self.unused)
            if new is None:
                carried = tuple(statement.leading_lines)
            else:
                out.append(new)
        return out


def _code(line: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(line.with_changes(leading_lines=())).strip()  # type: ignore[attr-defined]


def _last_without_semicolon(statements: list[cst.BaseSmallStatement]) -> list[cst.BaseSmallStatement]:
    last = statements[-1]
    if isinstance(getattr(last, "semicolon", None), cst.Semicolon):
        statements = [*statements[:-1], last.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)]
    return statements


class DropUnusedImport(PythonRuleKind):
    name = "drop-unused-import"
    command = DropUnusedImportCommand

    def configure(self, options: dict[str, Any]) -> None:
        modules = self.take(options, "modules", list)
        if not modules or not all(isinstance(m, str) and m for m in modules):
            raise RuleError("option 'modules' must be a list of module names")
        self.modules = frozenset(modules)
        self.anywhere = self.take(options, "anywhere", bool, False)
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted(f"import {m}" for m in self.modules))


class _ImportFinder(DetectionFinder):
    kind: ReportImport

    def __init__(self, kind: ReportImport, path: str) -> None:
        super().__init__(kind, path)
        self.depth = 0  # enclosing functions and classes: their imports run when called

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.depth += 1

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.depth -= 1

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.depth += 1

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.depth -= 1

    def visit_Import(self, node: cst.Import) -> None:
        if self.depth == 0 and any(bound_name(alias, self.kind.modules) for alias in node.names):
            self.add(node)


class ReportImport(PythonDetectionKind):
    """report-import: `import <module>` run when the file is imported (outside any function or
    class; inside a top-level `try` or `if` too), for the modules in `modules`."""

    name = "report-import"
    finder_class = _ImportFinder

    def configure_match(self, options: dict[str, Any]) -> None:
        self.modules = frozenset(self.strings(options, "modules"))
        if not self.modules:
            raise RuleError("option 'modules' must name at least one module")

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted(f"import {m}" for m in self.modules))
