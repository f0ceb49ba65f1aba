"""One libcst pass over one file: every applicable rule and the CUDA finders, together.

The file is parsed once and its metadata (positions, qualified names) resolved once. A single
traversal then offers each node to every rule, in the order of patches/order.toml, and to the finders, which
look at the *original* nodes. A finding that a rewrite covered is converted; what is left is
residue. Imports the rewrites need are added at the end (libcst's AddImportsVisitor).

The finders are passed in (any visitor with a `found` list of outcome.Finding), so this
module does not depend on findings.py, which calls it for `scan`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst import parse_statement
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, ImportItem
from libcst.helpers import get_absolute_module_from_package_for_import
from libcst.metadata import MetadataWrapper, PositionProvider

from latentsync_mps.port.outcome import Finding
from latentsync_mps.port.positions import LazyPositions
from latentsync_mps.port.rules.base import Change, FileContext, PythonRuleKind, Rewrite, RuleCommand, span_within
from latentsync_mps.port.rules.names import ImportedNameProvider, lazy_imported_names


@dataclass
class PassResult:
    code: bytes
    changes: list[Change]
    residue: list[Finding]  # reported and not replaced (lines of the rewritten file)
    found: list[Finding] = field(default_factory=list)  # every finding, with its replacement if any


class _CombinedPass(cst.CSTTransformer):
    """Offers every node to each finder and rule, in order, in one traversal.

    Dispatch is by node type through tables built once per pass, so a node that no rule or
    finder handles costs one dictionary lookup (libcst's own per-visitor `getattr` dispatch was
    most of the time of a pass with a dozen rules)."""

    def __init__(self, commands: Sequence[RuleCommand], finders: Sequence[cst.CSTVisitor]) -> None:
        super().__init__()
        self.participants = [*finders, *commands]
        self.finders = finders
        self.commands = commands
        self._visit: dict[str, list[Callable]] = {}
        self._leave: dict[str, list[tuple[bool, Callable]]] = {}

    def _visits(self, name: str) -> list[Callable]:
        if name not in self._visit:
            self._visit[name] = [
                handler for visitor in self.participants if (handler := _hook(visitor, f"visit_{name}"))
            ]
        return self._visit[name]

    def _leaves(self, name: str) -> list[tuple[bool, Callable]]:
        if name not in self._leave:
            # Every participant handles nodes through its typed methods (visit_Call, leave_If, ...):
            # none overrides the generic hooks, so a node type nobody handles costs one lookup.
            chain = [(False, h) for finder in self.finders if (h := _hook(finder, f"leave_{name}"))]
            chain += [(True, h) for command in self.commands if (h := _hook(command, f"leave_{name}"))]
            self._leave[name] = chain
        return self._leave[name]

    def on_visit(self, node: cst.CSTNode) -> bool:
        for handler in self._visits(type(node).__name__):
            handler(node)
        return True

    def on_leave(self, original_node: cst.CSTNode, updated_node: Any) -> Any:
        for transforms, handler in self._leaves(type(original_node).__name__):
            if not transforms:
                handler(original_node)
                continue
            if not isinstance(updated_node, cst.CSTNode):
                break  # removed or flattened: nothing left for later rules
            updated_node = handler(original_node, updated_node)
        return updated_node

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        pass  # no rule or finder uses per-attribute hooks

    def on_leave_attribute(self, original_node: cst.CSTNode, attribute: str) -> None:
        pass


def _hook(visitor: cst.CSTVisitor | cst.CSTTransformer, name: str) -> Callable | None:
    """The visitor's method `name`, unless it is one of libcst's do-nothing stubs (marked
    `_is_no_op`, as libcst's own batched visitors skip them): each participant then costs
    nothing on the node types it does not handle."""
    handler = getattr(visitor, name, None)
    return None if handler is None or getattr(handler, "_is_no_op", False) else handler


def run_pass(
    data: bytes | str, kinds: Sequence[PythonRuleKind], file: FileContext, finders: Sequence[cst.CSTVisitor] = ()
) -> PassResult:
    """Rewrite `data` with `kinds` (already filtered to this file; they run by `rank`, from
    order.toml) and let `finders` (visitors that collect findings in `.found`: the detection-only
    rules of patches/findings/) report. A finding a rewrite covered gets that rewrite's code as
    its `replacement`; the others are the residue."""
    module = cst.parse_module(data)
    context = CodemodContext(filename=file.path)
    log: list[Rewrite] = []
    commands = [kind.command(context, kind, file, log) for kind in sorted(kinds, key=lambda k: k.rank)]
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    dependencies = {dep for visitor in [*commands, *finders] for dep in visitor.get_inherited_dependencies()}
    lazy: dict[Any, Any] = {}
    if PositionProvider in dependencies:
        lazy[PositionProvider] = LazyPositions(module)  # positions.py: on first lookup, cheaper
    if ImportedNameProvider in dependencies and (names := lazy_imported_names(module)) is not None:
        lazy[ImportedNameProvider] = names  # rules/names.py: resolved per lookup, no traversal
    metadata = {**wrapper.resolve_many(dependencies - lazy.keys()), **lazy}
    for visitor in [*commands, *finders]:
        visitor.metadata = metadata  # what MetadataDependent.get_metadata reads
    new_module = module.visit(_CombinedPass(commands, finders))

    rewrites = _surviving(log)
    if rewrites and AddImportsVisitor.CONTEXT_KEY in context.scratch:
        new_module = _add_imports(new_module, context)
    found = [_replaced(f, rewrites) for finder in finders for f in finder.found]
    residue = [f for f in found if f.replacement is None]
    # Generating code is a traversal of its own: each is done once, and not at all for a file
    # nothing rewrote (libcst round-trips its input byte for byte).
    if not rewrites:
        return PassResult(data if isinstance(data, bytes) else module.bytes, [], residue, found)
    new_code = new_module.code
    if residue:
        residue = _renumber(residue, module.code, new_code)
    return PassResult(new_code.encode(new_module.encoding), [r.change for r in rewrites], residue, found)


def _add_imports(module: cst.Module, context: CodemodContext) -> cst.Module:
    """The imports the rewrites asked for (AddImportsVisitor.add_needed_import), added as libcst's
    AddImportsVisitor adds them: `_plain_imports` where the case is the plain one, else the
    visitor itself, shown only the module's leading block (docstring and first imports) and a
    stand-in for the statement after it (whose leading blank lines it adjusts): that is where it
    inserts and what it reads, and a full traversal of a 20 kB file costs it some 200 ms. An
    import that a file makes only after other code is not seen, so at worst it is imported
    twice, which is harmless."""
    plain = _plain_imports(module, AddImportsVisitor._get_imports_from_context(context))
    if plain is not None:
        return plain
    end = 1 if module.body and m.matches(module.body[0], _DOCSTRING) else 0
    while end < len(module.body) and m.matches(module.body[end], _IMPORT_LINE):
        end += 1
    rest = list(module.body[end:])
    stand_in = [cst.SimpleStatementLine([cst.Pass()], leading_lines=rest[0].leading_lines)] if rest else []
    head = module.with_changes(body=[*module.body[:end], *stand_in]).visit(AddImportsVisitor(context))
    body = list(head.body)
    if rest:
        rest[0] = rest[0].with_changes(leading_lines=body.pop().leading_lines)
    return head.with_changes(body=[*body, *rest])


def _plain_imports(module: cst.Module, needed: Sequence[ImportItem]) -> cst.Module | None:
    """What AddImportsVisitor makes of `module` when every needed import is absolute and
    unaliased (`import torch`, `from latentsync import _lsync_port`), the module starts with a
    plain docstring or none, and none of its first imports is from a module it must import
    from (which the visitor would extend): the missing imports, one statement per module in
    sorted order, after the first block of imports, and a blank line before the statement that
    follows. Setting up the visitor and its import gatherer costs some 15 ms a file, most of
    the helper-import step. None: any other case, which the visitor handles.
    (tests/test_rewrite_imports.py compares the two.)"""
    if any(item.alias is not None or item.relative or item.module == "__future__" for item in needed):
        return None
    body = module.body
    start = 1 if body and m.matches(body[0], _PLAIN_DOCSTRING) else 0
    if start == 0 and body and m.matches(body[0], _DOCSTRING | _STRICT_FLAG):
        return None  # the visitor's own rule for what comes before the imports
    modules = {item.module for item in needed if item.obj_name is None}
    objects: dict[str, set[str]] = {}
    for item in needed:
        if item.obj_name is not None:
            objects.setdefault(item.module, set()).add(item.obj_name)
    end = start
    while end < len(body) and m.matches(body[end], _IMPORT_LINE):
        statement = cst.ensure_type(body[end], cst.SimpleStatementLine).body[0]
        if isinstance(statement, cst.Import):
            modules -= {alias.evaluated_name for alias in statement.names if alias.asname is None}
        elif get_absolute_module_from_package_for_import(None, statement) in objects:
            return None
        end += 1
    if not modules and not objects:
        return module
    config = module.config_for_parsing
    added = [parse_statement(f"import {name}", config=config) for name in sorted(modules)]
    added += [
        parse_statement(f"from {name} import {', '.join(sorted(objects[name]))}", config=config)
        for name in sorted(objects)
    ]
    after = list(body[end:])
    if after and not after[0].leading_lines:
        after[0] = after[0].with_changes(leading_lines=(cst.EmptyLine(),))
    elif after and after[0].leading_lines[0].comment is not None:
        after[0] = after[0].with_changes(leading_lines=(cst.EmptyLine(), *after[0].leading_lines))
    return module.with_changes(body=[*body[:end], *added, *after])


_DOCSTRING = m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString() | m.ConcatenatedString())])
_IMPORT_LINE = m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()])
# What AddImportsVisitor keeps before the imports it adds (its _skip_first).
_PLAIN_DOCSTRING = m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])
_STRICT_FLAG = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("__strict__"))])])


def _surviving(log: list[Rewrite]) -> list[Rewrite]:
    """Drop rewrites inside a region that a later rewrite replaced wholesale."""
    # The log is in leave order (children before parents), so only a later entry can discard.
    return [
        r
        for i, r in enumerate(log)
        if not any(later.discards is not None and span_within(r.span, later.discards) for later in log[i + 1 :])
    ]


def _renumber(findings: list, old: str, new: str) -> list:
    """Findings carry lines of the original; the report is about the rewritten file."""
    if not findings:
        return findings
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    shift: dict[int, int] = {}
    for tag, i1, i2, j1, _ in matcher.get_opcodes():
        for i in range(i1, i2):
            shift[i + 1] = j1 + (i - i1 if tag == "equal" else 0) + 1
    return [replace(f, line=shift.get(f.line, f.line)) for f in findings]


def _replaced(finding: Finding, rewrites: list[Rewrite]) -> Finding:
    """The finding with the code of the rewrite that covered it (its node, or a whole region
    around it that a rewrite replaced), if one did."""
    for r in rewrites:
        if finding.span == r.span or (r.discards is not None and span_within(finding.span, r.discards)):
            return replace(finding, replacement=r.change.after)
    return finding
