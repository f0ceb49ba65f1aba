"""The one record every rule produces: a finding, with an optional replacement.

A detection-only rule reports; a rewriting rule's rewrite is the replacement of what it found.
After a pass, a finding that a rewrite covered carries that rewrite's code as `replacement`; one
without is *residue* (reported and not replaced). `scan` is the same pass with no replacements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import PositionProvider

SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    severity: str  # "error" | "warning"
    code: str
    why: str
    fix: str
    # Where in the source (start line, column, end line, column): lets apply tell which findings
    # a rewrite covered. Not part of the report.
    span: tuple[int, int, int, int] = field(default=(0, 0, 0, 0), compare=False, repr=False)
    # The code a rewrite put in its place, once a pass has run its rules; None: not replaced.
    replacement: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("path", "line", "kind", "severity", "code", "why", "fix")}


_EMPTY = cst.Module(body=[])


def finding_at(
    visitor: cst.MetadataDependent, path: str, node: cst.CSTNode, kind: str, severity: str, why: str, fix: str
) -> Finding:
    """A finding for `node` of the file `visitor` is visiting (it must depend on PositionProvider)."""
    position = visitor.get_metadata(PositionProvider, node)
    span = (position.start.line, position.start.column, position.end.line, position.end.column)
    code = " ".join(_EMPTY.code_for_node(node).split())
    return Finding(path, position.start.line, kind, severity, code[:120], why, fix, span)
