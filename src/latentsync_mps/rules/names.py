"""Qualified names through imports: what `F.interpolate` or `tc.empty_cache` really call.

libcst's QualifiedNameProvider answers this with a full scope analysis, which was about 40% of
the time of a rewrite pass. The rules only need names that come from imports (`import torch.nn.
functional as F`, `from torch.cuda import amp`, `from torch.nn.functional import interpolate as
up`), so this provider follows the imports of the module, in one batched traversal with the
other metadata, and gives any other dotted name as written.

What it does not see, by design: a local variable that shadows an imported name (`F = ...`
inside a function) still resolves to the import. Upstream code does not do that; a rule that
must be exact there can ask for libcst's QualifiedNameProvider instead.
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import BatchableMetadataProvider, QualifiedName, QualifiedNameSource


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
        root, dot, rest = dotted.partition(".")
        base = self.aliases.get(root)
        if base is None:
            return {QualifiedName(dotted, QualifiedNameSource.LOCAL)}
        return {QualifiedName(base + dot + rest, QualifiedNameSource.IMPORT)}

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
