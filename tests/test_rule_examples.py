"""Every example of every rule, run the way Fixit runs each rule's VALID/INVALID cases.

An example with `after` must turn `before` into exactly `after`, report one change per rewrite,
and leave `after` unchanged (idempotence). An example without `after` must stay unchanged. An
example of a detection-only rule (patches/findings/) must be reported at exactly its `report` lines.
"""

from __future__ import annotations

import pytest

import latentsync_mps.port.rules  # noqa: F401  (importing the package registers every kind)
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.finders import KINDS
from latentsync_mps.port.rulecheck import report_lines
from latentsync_mps.port.rulepack import load
from latentsync_mps.port.rules.base import RuleKind
from latentsync_mps.port.rules.report import PythonDetectionKind
from latentsync_mps.port.transform import run_rule

PACK = load(patches_dir())
CASES = [
    pytest.param(profile, rule, index, example, id=f"{profile.name}:{rule.id}:{index}")
    for profile in PACK.profiles.values()
    for rule in profile.rules
    for index, example in enumerate(rule.examples)
]


def test_every_rule_has_a_rewriting_example():
    for profile in PACK.profiles.values():
        for rule in profile.rules:
            assert any(e.after is not None for e in rule.examples), f"{rule.id} shows no rewrite"


@pytest.mark.parametrize(("profile", "rule", "index", "example"), CASES)
def test_rule_example(profile, rule, index, example):
    kind = RuleKind.registry[rule.kind](rule)
    result, changes = run_rule(kind, example.before, example.path, profile.runtime_module_for(example.path))
    if example.after is None:
        assert result == example.before, "a 'before'-only example must stay unchanged"
        assert changes == []
        return
    assert result == example.after
    assert changes, "a rewrite must be reported"
    assert all(c.rule_id == rule.id and c.line >= 1 for c in changes)
    again, more = run_rule(kind, result, example.path, profile.runtime_module_for(example.path))
    assert again == result and more == [], "applying a rule twice must change nothing the second time"


DETECTION_CASES = [
    pytest.param(rule, index, example, id=f"findings:{rule.id}:{index}")
    for rule in PACK.findings
    for index, example in enumerate(rule.examples)
]


def test_every_detection_rule_shows_a_report_and_names_a_known_finding_kind():
    assert PACK.findings, "patches/findings/ holds the detection-only rules"
    for rule in PACK.findings:
        assert any(e.report for e in rule.examples), f"{rule.id} shows nothing it reports"
        assert rule.options["finding"] in KINDS, f"{rule.id} reports an unknown finding kind"


@pytest.mark.parametrize(("rule", "index", "example"), DETECTION_CASES)
def test_detection_example(rule, index, example):
    """A detection-only rule's example states the lines it must report (`report`), no `after`."""
    kind = RuleKind.registry[rule.kind](rule)
    assert example.after is None
    assert report_lines(kind, example.before, example.path) == sorted(example.report)
    if example.report and isinstance(kind, PythonDetectionKind):
        # A file is parsed for a rule only when the rule's needles are in it: they must be in
        # every example it reports in, or tightening a needle could silently drop findings.
        assert kind.may_match(example.before.encode()), f"{rule.id}'s needles miss its own example"
