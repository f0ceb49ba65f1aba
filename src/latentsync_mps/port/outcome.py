"""What an apply or a scan reports, as plain records: a finding (with the replacement a rewrite put
in its place) and a rule's drift.

A detection-only rule reports; a rewriting rule's rewrite is the replacement of what it found.
After a pass, a finding that a rewrite covered carries that rewrite's code as `replacement`; one
without is *residue* (reported and not replaced). `scan` is the same pass with no replacements.
No libcst here: a re-apply answered from the manifest (noop.py) rebuilds these without loading a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Drift:
    """A rule that should have matched here and did not: upstream moved under it."""

    rule_id: str
    file: str
    expected: int
    found: int
