"""libcst's PositionProvider for one pass (rewrite.run_pass), computed when first asked and cheaper.

Every rule and finder depends on PositionProvider (file:line in the report, spans to tell which
findings a rewrite covered), but only asks for the nodes it reports or rewrites, and a file the
text prefilter let through often has none. libcst computes it with a full code generation that
records a CodeRange (two frozen dataclasses and a generator-based context manager) for every node
of the module, several times the cost of generating the code itself. Here it runs on the first
lookup, records plain tuples, and makes a CodeRange only for the nodes looked up. The positions
are libcst's: the same code generation, the same rules for syntactic positions
(tests/test_positions.py compares them with libcst's own on every node).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import libcst as cst
from libcst.metadata import CodePosition, CodeRange, PositionProvider
from libcst.metadata.position_provider import PositionProvidingCodegenState

Span = tuple[int, int, int, int]  # start line, start column, end line, end column


class LazyPositions(Mapping[cst.CSTNode, CodeRange]):
    """What `MetadataWrapper.resolve(PositionProvider)` returns for `module`, once looked into."""

    def __init__(self, module: cst.Module) -> None:
        self._module = module
        self._spans: dict[cst.CSTNode, Span] | None = None
        self._ranges: dict[cst.CSTNode, CodeRange] = {}

    def _computed(self) -> dict[cst.CSTNode, Span]:
        if self._spans is None:
            state = _SpanRecorder(
                default_indent=self._module.default_indent,
                default_newline=self._module.default_newline,
                provider=_Spans(),
            )
            self._module._codegen(state)
            self._spans = state.provider._computed
        return self._spans

    def __getitem__(self, node: cst.CSTNode) -> CodeRange:
        found = self._ranges.get(node)
        if found is None:
            line, column, end_line, end_column = self._computed()[node]
            found = self._ranges[node] = CodeRange(CodePosition(line, column), CodePosition(end_line, end_column))
        return found

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(self._computed())

    def __len__(self) -> int:
        return len(self._computed())


class _Spans(PositionProvider):
    """Only a holder of `_computed` (node -> Span) for the recorder below."""


class _SpanRecorder(PositionProvidingCodegenState):
    """PositionProvidingCodegenState with tuples in place of CodePosition/CodeRange and a plain
    context manager in place of a generator; the positions it records are the same."""

    def _update_position(self, value: str) -> None:
        if "\n" in value or "\r" in value:
            super()._update_position(value)
        else:  # no line break: what the parent's split would conclude, without the regex
            self.column += len(value)

    def before_codegen(self, node: cst.CSTNode) -> None:
        self._stack.append((self.line, self.column))

    def after_codegen(self, node: cst.CSTNode) -> None:
        line, column = self._stack.pop()
        computed = self.provider._computed
        if node not in computed:  # a syntactic position recorded inside wins, as in libcst
            computed[node] = (line, column, self.line, self.column)

    def record_syntactic_position(
        self, node: cst.CSTNode, *, start_node: cst.CSTNode | None = None, end_node: cst.CSTNode | None = None
    ) -> _SyntacticPosition:
        return _SyntacticPosition(self, node, start_node, end_node)


class _SyntacticPosition:
    """The context manager of PositionProvidingCodegenState.record_syntactic_position."""

    __slots__ = ("state", "node", "start_node", "end_node", "start")

    def __init__(
        self, state: _SpanRecorder, node: cst.CSTNode, start_node: cst.CSTNode | None, end_node: cst.CSTNode | None
    ) -> None:
        self.state, self.node, self.start_node, self.end_node = state, node, start_node, end_node

    def __enter__(self) -> None:
        self.start = (self.state.line, self.state.column)

    def __exit__(self, *exc: object) -> bool:
        computed = self.state.provider._computed
        start = computed[self.start_node][:2] if self.start_node is not None else self.start
        end = computed[self.end_node][2:] if self.end_node is not None else (self.state.line, self.state.column)
        computed[self.node] = (*start, *end)
        return False
