"""What every rule kind shares: the rule entry read from a TOML file, the record of one change,
and the two shapes of kind (Python files through libcst, requirement files through `packaging`).

A kind is a class; a rule is one configured use of a kind. Kinds register themselves by name so
that rule files can say `kind = "device-literal"`.
"""

from __future__ import annotations

import ast
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor
from libcst.metadata import CodeRange, PositionProvider

from latentsync_mps.pack.rule import Rule

# The name under which rewritten code reaches the runtime helper module (`_lsync_port.device()`).
HELPER = "_lsync_port"


def expression_shape(code: str) -> str | None:
    """The AST of an expression as a string, or None if it is not one: equal shapes mean the same
    code whatever its quoting, spacing and line breaks."""
    try:
        return ast.dump(ast.parse(code.strip(), mode="eval").body)
    except SyntaxError:
        return None


class RuleError(ValueError):
    """A rule entry is malformed. The message names the file and the rule."""


@dataclass(frozen=True)
class Change:
    """One rewrite: where, which rule, and the code before and after (one line each, for reports)."""

    rule_id: str
    path: str
    line: int
    before: str
    after: str


def rewrite_line_by_line(
    text: str, kinds: Sequence[RuleKind], ctx: FileContext, offer: Callable[[Any, str, list[str]], list[str] | None]
) -> tuple[str, list[Change]]:
    """The pass of the line-based languages (requirement files, shell scripts): each line is offered
    to every rule in turn, `offer(kind, line, lines_above) -> replacement lines or None`, so a rule
    sees the lines an earlier rule produced. Changes carry the line numbers of the original text."""
    out: list[str] = []
    changes: list[Change] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        lines = [line]
        for kind in kinds:
            produced: list[str] = []
            for current in lines:
                new_lines = offer(kind, current, out + produced)
                if new_lines is None or new_lines == [current]:
                    produced.append(current)
                    continue
                produced.extend(new_lines)
                after = " | ".join(n.strip() for n in new_lines) or "(removed)"
                changes.append(Change(kind.rule.id, ctx.path, number, current.strip(), after))
            lines = produced
        out.extend(lines)
    return "".join(out), changes


@dataclass
class FileContext:
    """What a rule may know about the file it rewrites."""

    path: str  # relative to the tree root, POSIX separators
    runtime_module: str  # e.g. "latentsync._lsync_port"; a leading "." makes the import relative


class RuleKind(ABC):
    """One kind of rewrite. Subclasses set `name` and implement `needles` and their transform."""

    name: ClassVar[str]
    # The order kinds run in within one file is data: patches/order.toml (see ruleset.KindOrder).
    # The file types the kind rewrites: "python" or "requirements".
    language: ClassVar[str] = "python"
    registry: ClassVar[dict[str, type[RuleKind]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            RuleKind.registry[cls.name] = cls

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.rank = 0  # where the kind runs within a file's pass: set from patches/order.toml (Profile.kinds)
        self.configure(dict(rule.options))

    def configure(self, options: dict[str, Any]) -> None:
        """Read `rule.options`; raise RuleError for anything missing or unknown."""
        if options:
            raise RuleError(f"unknown option(s): {', '.join(sorted(options))}")

    @abstractmethod
    def needles(self) -> tuple[str, ...]:
        """Substrings one of which a file must contain for this rule to possibly match it."""

    @staticmethod
    def take(options: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """Pop one option, checking its type; `default=...` makes it required."""
        if key not in options:
            if default is ...:
                raise RuleError(f"missing option '{key}'")
            return default
        value = options.pop(key)
        if not isinstance(value, kind):
            raise RuleError(f"option '{key}' has the wrong type ({type(value).__name__})")
        return value


Span = tuple[int, int, int, int]  # start line, start column, end line, end column


def span_of(position: CodeRange) -> Span:
    return (position.start.line, position.start.column, position.end.line, position.end.column)


def span_within(inner: Span, outer: Span) -> bool:
    return inner[:2] >= outer[:2] and inner[2:] <= outer[2:]


@dataclass(frozen=True)
class Rewrite:
    """A Change plus where it sits in the original source, for the single-pass bookkeeping:
    `span` is the node rewritten; `discards` is the part of the original whose rewritten form
    was thrown away (a whole expression replaced), so changes inside it did not happen."""

    change: Change
    span: Span
    discards: Span | None


class PythonRuleKind(RuleKind):
    """A rule kind that rewrites Python source; its `command` runs inside the file's single pass."""

    command: ClassVar[type[RuleCommand[Any]]]


KindT = TypeVar("KindT", bound=PythonRuleKind)


class RuleCommand(cst.CSTTransformer, Generic[KindT]):
    """Base of every Python rule's transformer. It runs inside one pass with the file's other
    rules (see rewrite.py), shares their metadata, and records each rewrite for the report.

    Generic in its kind, so that `self.kind` has the kind's own type (its parsed options):
    `class FooCommand(RuleCommand["Foo"])`."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, context: CodemodContext, kind: KindT, file: FileContext, log: list[Rewrite]) -> None:
        super().__init__()
        self.context = context  # shared with AddImportsVisitor, which adds the imports at the end
        self.kind = kind
        self.file = file
        self.log = log

    def record(self, original: cst.CSTNode, updated: cst.CSTNode, discards: cst.CSTNode | None = None) -> None:
        """Note one rewrite of `original` (a node of the parsed source) into `updated`."""
        position = self.get_metadata(PositionProvider, original)
        code = cst.Module(body=[])
        change = Change(
            rule_id=self.kind.rule.id,
            path=self.file.path,
            line=position.start.line,
            before=_one_line(code.code_for_node(original)),
            after=_one_line(code.code_for_node(updated)),
        )
        dropped = None if discards is None else span_of(self.get_metadata(PositionProvider, discards))
        self.log.append(Rewrite(change, span_of(position), dropped))

    def require_helper(self) -> None:
        """Make sure the rewritten module imports the runtime helper as `_lsync_port`."""
        module = self.file.runtime_module
        relative = len(module) - len(module.lstrip("."))
        package, _, name = module[relative:].rpartition(".")
        AddImportsVisitor.add_needed_import(self.context, package, name, relative=relative)

    def helper(self, call: str) -> cst.BaseExpression:
        """`_lsync_port.<call>` as an expression (and the import it needs)."""
        self.require_helper()
        return cst.parse_expression(f"{HELPER}.{call}")


def _one_line(code: str, limit: int = 120) -> str:
    flat = " ".join(code.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class RequirementsRuleKind(RuleKind):
    """A rule kind that rewrites a pip requirements file line by line."""

    language = "requirements"

    @abstractmethod
    def rewrite_line(self, line: str) -> list[str] | None:
        """The lines (with their endings) that replace `line`, or None to keep it."""
