"""The rule packs with their kinds: pack/ruleset.py reads and checks the files; the kinds of
rules/ name themselves, check each rule's options and build it."""

from __future__ import annotations

from pathlib import Path

from latentsync_mps.pack import ruleset
from latentsync_mps.pack.rule import Rule
from latentsync_mps.port import rules  # noqa: F401  (importing the package registers every kind)
from latentsync_mps.port.rules.base import RuleError, RuleKind
from latentsync_mps.port.rules.report import DetectionRuleKind


class RuleKinds:
    """Every registered kind, as pack/ruleset.py's KindCatalog."""

    def names(self) -> list[str]:
        return sorted(RuleKind.registry)

    def reports_only(self, kind: str) -> bool:
        return issubclass(RuleKind.registry[kind], DetectionRuleKind)

    def problem(self, rule: Rule) -> str | None:
        try:
            self.build(rule)
        except RuleError as error:
            return str(error)
        return None

    def build(self, rule: Rule) -> RuleKind:
        return RuleKind.registry[rule.kind](rule)


def load(root: Path) -> ruleset.RulePack:
    """The rule packs under `root` (patches_dir(), or a pack of one's own), every rule checked by its kind."""
    return ruleset.load(root, RuleKinds())
