"""`lsync-port check-rules DIR`: load a rule pack as LSYNC_PORT_PATCHES would, and run every
example of every rule, the way `fixit test` runs each rule's VALID/INVALID cases.

- an example with `after` must turn `before` into exactly `after`, report one change per
  rewrite, and leave `after` unchanged (idempotence);
- an example with neither must stay unchanged;
- an example of a detection-only rule (`report = [lines]`) must be reported at exactly those lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from latentsync_mps.pack.rule import Example, Rule
from latentsync_mps.pack.ruleset import RulePack
from latentsync_mps.port.rules.base import FileContext, RuleKind
from latentsync_mps.port.rules.report import DetectionRuleKind, PythonDetectionKind, RequirementReport


@dataclass(frozen=True)
class ExampleResult:
    profile: str  # or "findings" for a detection-only rule
    rule: Rule
    index: int  # of the example within its rule, from 1
    problem: str | None  # None: it passed

    @property
    def name(self) -> str:
        return f"{self.profile}:{self.rule.id}:{self.index}"


def check_pack(pack: RulePack) -> Iterator[ExampleResult]:
    """Every example of every rule (each profile's, then the detection-only ones), in file order."""
    for profile in pack.profiles.values():
        for rule in profile.rules:
            for index, example in enumerate(rule.examples, start=1):
                module = profile.runtime_module_for(example.path)
                yield ExampleResult(profile.name, rule, index, _rewrite_problem(rule, example, module))
    for rule in pack.findings:
        for index, example in enumerate(rule.examples, start=1):
            yield ExampleResult(rule.profile, rule, index, _report_problem(rule, example))


def _rewrite_problem(rule: Rule, example: Example, runtime_module: str) -> str | None:
    from latentsync_mps.port.transform import run_rule

    kind = RuleKind.registry[rule.kind](rule)
    try:
        result, changes = run_rule(kind, example.before, example.path, runtime_module)
    except Exception as error:  # a rule pack of one's own: say which example broke, and how
        return f"raised {type(error).__name__}: {error}"
    if example.after is None:
        if result != example.before:
            return "a 'before'-only example must stay unchanged, but it was rewritten"
        return f"reported {len(changes)} change(s) but changed nothing" if changes else None
    if result != example.after:
        return "the result differs from 'after':\n" + _diff(example.after, result)
    if not changes:
        return "the rewrite was not reported as a change"
    again, more = run_rule(kind, result, example.path, runtime_module)
    if again != result or more:
        return "applying the rule twice changes something the second time (not idempotent)"
    return None


def report_lines(kind: DetectionRuleKind, text: str, path: str) -> list[int]:
    """The lines `kind` reports in `text`, ignoring file selection: what its examples exercise."""
    from latentsync_mps.port.rewrite import run_pass

    if isinstance(kind, RequirementReport):
        found = [kind.report(path, number, line) for number, line in enumerate(text.splitlines(), start=1)]
        return [f.line for f in found if f is not None]
    assert isinstance(kind, PythonDetectionKind)
    path = path or "example.py"
    return sorted(f.line for f in run_pass(text, [], FileContext(path, ""), [kind.finder(path)]).residue)


def _report_problem(rule: Rule, example: Example) -> str | None:
    kind = RuleKind.registry[rule.kind](rule)
    assert isinstance(kind, DetectionRuleKind)
    try:
        lines = report_lines(kind, example.before, example.path)
    except Exception as error:
        return f"raised {type(error).__name__}: {error}"
    wanted = sorted(example.report or ())
    if lines != wanted:
        return f"reported line(s) {lines or 'none'}, the example says {wanted or 'none'}"
    if wanted and isinstance(kind, PythonDetectionKind) and not kind.may_match(example.before.encode()):
        return "its needles are not in the example: a file like it would not be parsed for this rule"
    return None


def _diff(want: str, got: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "after", "result"))
