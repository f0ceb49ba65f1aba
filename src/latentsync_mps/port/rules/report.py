"""Detection-only kinds: rules that report what they find and replace nothing.

Their rules live in `patches/findings/*.toml`, are profile-independent (`scan` runs them on any
tree) and carry, as data, the finding they report: `finding` (the finding kind, see
findings.KINDS), `severity`, `why` and `fix`. Their examples have no `after`; `report` lists the
lines that must be reported (`report = []`: nothing).

- report-call: a call, by the qualified name of its callee (`callee`) or by method name
  (`method`, optionally on a receiver named in `receiver`), with a number of
  arguments (`args`: "any", "none" or "some": at least one); `unguarded = true`: only outside
  any `if` (a switch that nothing decides on).
- report-attribute: an attribute by name (`attribute`: `x.is_cuda`), except inside
  `if <guard>:` when `guard` (an expression, compared by syntax tree) is given.
- report-keyword: a keyword argument given a literal (`keyword`, `value`: `pin_memory=True`).
- report-sequence: a list or tuple literal that holds the string `contains` and none of
  `unless` (`["CUDAExecutionProvider"]`).
- requirement-report: a requirement line, by package (`package`, optionally only when pinned
  `below` a version) or an option line by the text it contains (`option_contains`). Lines
  already kept off macOS by an environment marker are not reported.

Options every Python detection kind takes (besides its own):
- `guard`: an expression; inside `if <guard>:` (compared by syntax tree) the rule reports
  nothing, because that code runs only where the guard holds (kinds that say they take it).
- `supersedes`: ids of other detection rules. Where this rule reports, the superseded rules'
  findings about the same code (the name or call each finding is about, its *subject*) are
  hidden: one reference, one finding. `torch.backends.cudnn.benchmark = True` is a cuda-flag
  (rule report-cuda-flag), not also a torch-cuda reference (rule report-torch-cuda).

More kinds, one file each topic: cuda_reference.py, device_report.py, dtype_report.py,
branch_report.py, attention_report.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

import libcst as cst
from libcst.metadata import PositionProvider
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from latentsync_mps.port.outcome import SEVERITIES, Finding
from latentsync_mps.port.rules.base import RuleError, RuleKind, Span, expression_shape, span_of, span_within
from latentsync_mps.port.rules.names import ImportedNameProvider

_EMPTY = cst.Module(body=[])


def finding_at(
    visitor: cst.MetadataDependent, path: str, node: cst.CSTNode, kind: str, severity: str, why: str, fix: str
) -> Finding:
    """A finding for `node` of the file `visitor` is visiting (it must depend on PositionProvider)."""
    position = visitor.get_metadata(PositionProvider, node)
    span = (position.start.line, position.start.column, position.end.line, position.end.column)
    code = " ".join(_EMPTY.code_for_node(node).split())
    return Finding(path, position.start.line, kind, severity, code[:120], why, fix, span)


class DetectionRuleKind(RuleKind):
    """A kind whose rules only report. Subclasses read their matching options in `configure_match`."""

    detection: ClassVar[bool] = True

    # False for a kind whose texts (severity, why, fix) come from a table of its own instead
    # (report-cuda-reference: patches/torch-cuda.toml); `finding` is always given.
    own_texts: ClassVar[bool] = True

    def configure(self, options: dict[str, Any]) -> None:
        self.finding = self.take(options, "finding", str)
        if self.own_texts:
            self.severity = self.take(options, "severity", str)
            self.why = self.take(options, "why", str)
            self.fix = self.take(options, "fix", str)
        else:  # each finding's texts come from the kind's table
            self.severity, self.why, self.fix = "error", "", ""
        if self.severity not in SEVERITIES:
            raise RuleError(f"option 'severity' must be one of {', '.join(SEVERITIES)}: {self.severity!r}")
        self.supersedes = self.strings(options, "supersedes")
        self.configure_match(options)
        super().configure(options)

    def configure_match(self, options: dict[str, Any]) -> None:
        """Read the options that say what to report."""

    @staticmethod
    def strings(options: dict[str, Any], key: str) -> tuple[str, ...]:
        value = RuleKind.take(options, key, (list, str), [])
        values = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) and v for v in values):
            raise RuleError(f"option '{key}' must be a string or a list of strings")
        return tuple(values)


class PythonDetectionKind(DetectionRuleKind):
    """Reports in Python files, inside the file's single pass (a visitor of the original nodes)."""

    finder_class: ClassVar[type[DetectionFinder]]  # the visitor that reports this kind's findings

    def finder(self, path: str) -> DetectionFinder:
        return self.finder_class(self, path)

    def also_needs(self) -> tuple[str, ...]:
        """Texts a file must contain, every one, besides one of `needles()`, for this rule to
        possibly match it (the `= None` of a left-out branch): fewer files parsed for nothing."""
        return ()

    def may_match(self, data: bytes) -> bool:
        return any(n.encode() in data for n in self.needles()) and all(w.encode() in data for w in self.also_needs())

    @staticmethod
    def guard_option(options: dict[str, Any]) -> str | None:
        """The `guard` option as an expression shape (None: no guard)."""
        guard = RuleKind.take(options, "guard", str, None)
        shape = None if guard is None else expression_shape(guard)
        if guard is not None and shape is None:
            raise RuleError(f"option 'guard' is not a Python expression: {guard!r}")
        return shape


_EMPTY = cst.Module(body=[])


def quoted(literal: str) -> tuple[str, ...]:
    """The needles of a string literal: its text after either quote (prefixes and triple quotes included)."""
    return (f'"{literal}', f"'{literal}")


class DetectionFinder(cst.CSTVisitor):
    """The visitor of one detection-only rule over one file. It records each finding with its
    subject (the span of the code it is about); `found` leaves out those that a superseding
    rule's finding is about too (`superseded_by`, wired by findings.python_finders)."""

    METADATA_DEPENDENCIES = (PositionProvider, ImportedNameProvider)

    def __init__(self, kind: PythonDetectionKind, path: str) -> None:
        super().__init__()
        self.kind, self.path = kind, path
        self.reported: list[tuple[Finding, Span]] = []
        self.superseded_by: list[DetectionFinder] = []

    @property
    def found(self) -> list[Finding]:
        covered = [subject for other in self.superseded_by for _, subject in other.reported]
        return [f for f, subject in self.reported if not any(span_within(subject, c) for c in covered)]

    def add(
        self,
        node: cst.CSTNode,
        subject: cst.CSTNode | None = None,
        *,
        finding: str | None = None,
        severity: str | None = None,
        why: str | None = None,
        fix: str | None = None,
    ) -> None:
        """Report `node` (about `subject`, default the node itself) with the rule's texts unless given."""
        kind = self.kind
        reported = finding_at(
            self, self.path, node, finding or kind.finding, severity or kind.severity, why or kind.why, fix or kind.fix
        )
        where = reported.span if subject is None else span_of(self.get_metadata(PositionProvider, subject))
        self.reported.append((reported, where))

    def qualified(self, node: cst.CSTNode) -> set[str]:
        """The names `node` stands for through the file's imports (`F.interpolate` -> torch.nn.functional...)."""
        return {q.name for q in self.get_metadata(ImportedNameProvider, node, set())}

    @staticmethod
    def code(node: cst.CSTNode) -> str:
        return _EMPTY.code_for_node(node)


class GuardedFinder(DetectionFinder):
    """A finder that reports nothing inside `if <guard>:` (the kind's `guard_shape`; None: no guard)."""

    def __init__(self, kind: PythonDetectionKind, path: str) -> None:
        super().__init__(kind, path)
        self.guards: list[bool] = []  # per enclosing `if`: is its test the guard?

    def visit_If(self, node: cst.If) -> None:
        guard = self.kind.guard_shape  # type: ignore[attr-defined]
        self.guards.append(guard is not None and expression_shape(self.code(node.test)) == guard)

    def leave_If(self, original_node: cst.If) -> None:
        self.guards.pop()

    @property
    def guarded(self) -> bool:
        return any(self.guards)


class _CallFinder(DetectionFinder):
    kind: ReportCall

    def __init__(self, kind: ReportCall, path: str) -> None:
        super().__init__(kind, path)
        self.ifs = 0  # enclosing `if` statements

    def visit_If(self, node: cst.If) -> None:
        self.ifs += 1

    def leave_If(self, original_node: cst.If) -> None:
        self.ifs -= 1

    def visit_Call(self, node: cst.Call) -> None:
        kind = self.kind
        if kind.unguarded and self.ifs:
            return
        if kind.callee:
            if not self.qualified(node.func) & kind.callee:
                return
        else:
            func = node.func
            if not (isinstance(func, cst.Attribute) and func.attr.value in kind.method):
                return
            if kind.receiver and not _named(func.value, kind.receiver):
                return
        if (kind.args == "none" and node.args) or (kind.args == "some" and not node.args):
            return
        self.add(node)


def _named(node: cst.BaseExpression, names: tuple[str, ...]) -> bool:
    """`vae` or `self.vae` (a Name, or an attribute, called one of `names`)."""
    if isinstance(node, cst.Name):
        return node.value in names
    return isinstance(node, cst.Attribute) and node.attr.value in names


class ReportCall(PythonDetectionKind):
    name = "report-call"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.callee = frozenset(self.strings(options, "callee"))
        self.method = self.strings(options, "method")
        self.receiver = self.strings(options, "receiver")
        self.args = self.take(options, "args", str, "any")
        self.unguarded = self.take(options, "unguarded", bool, False)
        if self.args not in ("any", "none", "some"):
            raise RuleError(f"option 'args' must be any, none or some: {self.args!r}")
        if bool(self.callee) == bool(self.method):
            raise RuleError("give exactly one of 'callee' (qualified names) or 'method' (method names)")
        if self.receiver and not self.method:
            raise RuleError("option 'receiver' needs 'method'")

    def needles(self) -> tuple[str, ...]:
        # A receiver, when given, must be in the file as much as the method: it is the rarer word
        # (`vae` rather than `decode`, which tokenizers and box utilities call too).
        return tuple(name.rpartition(".")[2] for name in self.callee) or self.receiver or self.method

    finder_class = _CallFinder


class _AttributeFinder(GuardedFinder):
    kind: ReportAttribute

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value == self.kind.attribute and not self.guarded:
            self.add(node)


class ReportAttribute(PythonDetectionKind):
    name = "report-attribute"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.attribute = self.take(options, "attribute", str)
        self.guard_shape = self.guard_option(options)

    def needles(self) -> tuple[str, ...]:
        return (self.attribute,)

    finder_class = _AttributeFinder


class _KeywordFinder(DetectionFinder):
    kind: ReportKeyword

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is None or node.keyword.value != self.kind.keyword:
            return
        value = node.value
        written = value.value if isinstance(value, cst.Name) else _EMPTY.code_for_node(value).strip()
        if written == self.kind.value:
            self.add(node)


class ReportKeyword(PythonDetectionKind):
    name = "report-keyword"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.keyword = self.take(options, "keyword", str)
        self.value = self.take(options, "value", str)  # the literal as written: "True", '"cuda"'

    def needles(self) -> tuple[str, ...]:
        return (self.keyword,)

    finder_class = _KeywordFinder


class _SequenceFinder(DetectionFinder):
    kind: ReportSequence

    def visit_List(self, node: cst.List) -> None:
        self._check(node)

    def visit_Tuple(self, node: cst.Tuple) -> None:
        self._check(node)

    def _check(self, node: cst.List | cst.Tuple) -> None:
        values = {el.value.evaluated_value for el in node.elements if isinstance(el.value, cst.SimpleString)}
        if self.kind.contains in values and not values & self.kind.unless:
            self.add(node)


class ReportSequence(PythonDetectionKind):
    name = "report-sequence"

    def configure_match(self, options: dict[str, Any]) -> None:
        self.contains = self.take(options, "contains", str)
        self.unless = frozenset(self.strings(options, "unless"))

    def needles(self) -> tuple[str, ...]:
        return (self.contains,)

    finder_class = _SequenceFinder


class RequirementReport(DetectionRuleKind):
    name = "requirement-report"
    language = "requirements"
    _DARWIN: ClassVar[dict[str, str]] = {
        "platform_system": "Darwin",
        "sys_platform": "darwin",
        "platform_machine": "arm64",
    }

    def configure_match(self, options: dict[str, Any]) -> None:
        package = self.take(options, "package", str, None)
        self.package = canonicalize_name(package) if package else None
        below = self.take(options, "below", str, None)
        try:
            self.below = Version(below) if below else None
        except InvalidVersion:
            raise RuleError(f"option 'below' is not a version: {below!r}") from None
        self.option_contains = self.take(options, "option_contains", str, None)
        if (self.package is None) == (self.option_contains is None):
            raise RuleError("give exactly one of 'package' or 'option_contains'")
        if self.below is not None and self.package is None:
            raise RuleError("option 'below' needs 'package'")

    def needles(self) -> tuple[str, ...]:
        return (self.option_contains or self.package or "",)

    def report(self, path: str, number: int, line: str) -> Finding | None:
        """The finding for one line of a requirements file, or None."""
        from latentsync_mps.port.rules.requirements import RequirementLine

        stripped = line.strip()
        if self.option_contains is not None:
            if stripped.startswith("-") and self.option_contains in stripped:
                return Finding(path, number, self.finding, self.severity, stripped, self.why, self.fix)
            return None
        parsed = RequirementLine.parse(line)
        if parsed is None or canonicalize_name(parsed.requirement.name) != self.package:
            return None
        marker = parsed.requirement.marker
        if marker is not None and not marker.evaluate(self._DARWIN):
            return None  # already kept off macOS
        if self.below is not None and not _pinned_below(parsed.requirement.specifier, self.below):
            return None
        return Finding(path, number, self.finding, self.severity, stripped, self.why, self.fix)


def _pinned_below(specifier, version: Version) -> bool:
    """True when the specifier pins (==, ~=, ===) only versions below `version`."""
    pins = [s for s in specifier if s.operator in ("==", "===", "~=")]
    return bool(pins) and all(Version(p.version.removesuffix(".*")) < version for p in pins)
