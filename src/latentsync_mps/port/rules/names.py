"""Qualified names through imports: what `F.interpolate` or `tc.empty_cache` really call.

libcst's QualifiedNameProvider answers this with a full scope analysis, which was about 40% of
the time of a rewrite pass. The rules only need names that come from imports (`import torch.nn.
functional as F`, `from torch.cuda import amp`, `from torch.nn.functional import interpolate as
up`), so this provider follows the imports of the module, in one batched traversal with the
other metadata, and gives any other dotted name as written.

What it does not see, by design: a local variable that shadows an imported name (`F = ...`
inside a function) still resolves to the import. Upstream code does not do that; a rule that
must be exact there can ask for libcst's QualifiedNameProvider instead.

Rules ask about a few nodes (a call's callee, an assignment's target) of the tens of thousands
the provider's traversal visits, and that traversal was most of its cost. `lazy_imported_names`
answers those lookups without one, from the module's import table, when the table is the same
at every node (see there); otherwise the provider runs as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import libcst as cst
from libcst.metadata import BatchableMetadataProvider, MetadataWrapper, QualifiedName, QualifiedNameSource


class ImportedNameProvider(BatchableMetadataProvider[set[QualifiedName]]):
    """Metadata of every Name and Attribute chain: {QualifiedName(resolved, source)}."""

    def __init__(self) -> None:
        super().__init__()
        self.aliases: dict[str, str] = {}

    def visit_Module(self, node: cst.Module) -> None:
        # Imports at the top level count everywhere (a function may use a module imported below it).
        for statement in node.body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, (cst.Import, cst.ImportFrom)):
                        self._bind(small)

    def visit_Import(self, node: cst.Import) -> None:
        self._bind(node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self._bind(node)

    def leave_Name(self, original_node: cst.Name) -> None:
        self.set_metadata(original_node, self._resolve(original_node.value))

    def leave_Attribute(self, original_node: cst.Attribute) -> None:
        dotted = dotted_name(original_node)
        if dotted is not None:
            self.set_metadata(original_node, self._resolve(dotted))

    def _resolve(self, dotted: str) -> set[QualifiedName]:
        return _resolve(self.aliases, dotted)

    def _bind(self, node: cst.Import | cst.ImportFrom) -> None:
        if isinstance(node, cst.Import):
            for alias in node.names:
                full = dotted_name(alias.name)
                if full is None:
                    continue
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    self.aliases[alias.asname.name.value] = full
                else:  # `import torch.nn` binds `torch`
                    root = full.partition(".")[0]
                    self.aliases[root] = root
            return
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return  # relative and star imports name nothing the rules look for
        module = dotted_name(node.module)
        if module is None:
            return
        for alias in node.names:
            if not isinstance(alias.name, cst.Name):
                continue
            local = alias.name.value
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self.aliases[local] = f"{module}.{alias.name.value}"


def _resolve(aliases: dict[str, str], dotted: str) -> set[QualifiedName]:
    root, dot, rest = dotted.partition(".")
    base = aliases.get(root)
    if base is None:
        return {QualifiedName(dotted, QualifiedNameSource.LOCAL)}
    return {QualifiedName(base + dot + rest, QualifiedNameSource.IMPORT)}


class LazyImportedNames(Mapping[cst.CSTNode, set[QualifiedName]]):
    """What `MetadataWrapper.resolve(ImportedNameProvider)` returns for a module whose import
    table is `aliases` at every node: each lookup is resolved when asked. A Name or Attribute
    chain that is not of the module (a node a rule built) gets an answer too, where the provider
    has none: the rules and finders only ask about the parsed nodes. Iterating (which no rule
    does) runs the provider itself."""

    def __init__(self, module: cst.Module, aliases: dict[str, str]) -> None:
        self._module, self._aliases = module, aliases
        self._all: Mapping[cst.CSTNode, set[QualifiedName]] | None = None

    def __getitem__(self, node: cst.CSTNode) -> set[QualifiedName]:
        dotted = (
            node.value if isinstance(node, cst.Name) else dotted_name(node) if isinstance(node, cst.Attribute) else None
        )
        if dotted is None:
            raise KeyError(node)
        return _resolve(self._aliases, dotted)

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def _resolved(self) -> Mapping[cst.CSTNode, set[QualifiedName]]:
        if self._all is None:
            self._all = MetadataWrapper(self._module, unsafe_skip_copy=True).resolve(ImportedNameProvider)
        return self._all


def lazy_imported_names(module: cst.Module) -> LazyImportedNames | None:
    """The provider's answers for `module` without its traversal, when they cannot depend on
    where a node is: every import of the module (at any depth) binds its names to what the
    top-level imports bind them to. The provider binds the top-level imports first, then each
    import again as its traversal reaches it, so an import inside a function (or a name imported
    twice, differently) changes the table from there on: None then, and the provider runs."""
    provider = ImportedNameProvider()
    provider.visit_Module(module)
    table = provider.aliases
    for statement in _imports(module):
        probe = ImportedNameProvider()
        probe._bind(statement)
        if any(table.get(local) != full for local, full in probe.aliases.items()):
            return None
    return LazyImportedNames(module, table)


def _imports(node: cst.CSTNode) -> Iterator[cst.Import | cst.ImportFrom]:
    """Every import statement below `node`: imports are small statements, so expressions are
    not entered."""
    for child in node.children:
        if isinstance(child, cst.Import | cst.ImportFrom):
            yield child
        elif not isinstance(child, cst.BaseExpression | cst.BaseSmallStatement):
            yield from _imports(child)


def dotted_name(node: cst.BaseExpression) -> str | None:
    """`a.b.c` for a chain of names, else None (a call or subscript in the chain)."""
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))
