"""Requirement-file kinds: pins with no macOS arm64 wheel are swapped, gated or dropped.

Each line is parsed with `packaging`; a line it cannot parse (an `-e` path, a URL, an option it
does not know) is left exactly as it was. Comments, blank lines, order and line endings are kept,
and only the lines a rule rewrites change.

- requirement-replace: `decord==0.6.0` -> eva-decord / decord2 behind environment markers;
  `onnxruntime-gpu` -> `onnxruntime` (optionally keeping the version).
- requirement-marker: `xformers`, `triton` kept only where they have wheels (`platform_system != "Darwin"`).
- requirement-drop-option: `--extra-index-url https://download.pytorch.org/whl/cu121` removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from latentsync_mps.port.rules.base import Change, FileContext, RequirementsRuleKind, RuleError, rewrite_line_by_line


@dataclass
class RequirementLine:
    """One line split into the requirement, its trailing comment and its line ending."""

    requirement: Requirement
    comment: str  # "  # why", or ""
    newline: str

    @classmethod
    def parse(cls, line: str) -> RequirementLine | None:
        body = line.rstrip("\r\n")
        newline = line[len(body) :]
        code, hash_, comment = body.partition(" #")
        if body.lstrip().startswith(("#", "-")) or not code.strip():
            return None
        try:
            requirement = Requirement(code.strip())
        except InvalidRequirement:
            return None
        return cls(requirement, (" " + hash_ + comment) if hash_ else "", newline)


def rewrite_requirements(text: str, kinds: list[RequirementsRuleKind], ctx: FileContext) -> tuple[str, list[Change]]:
    """Every requirements rule over the file, line by line (`rewrite_line_by_line`)."""
    return rewrite_line_by_line(text, kinds, ctx, lambda kind, line, above: kind.rewrite_line(line))


class RequirementReplace(RequirementsRuleKind):
    """Options: package = "decord"; replacement = ["eva-decord==0.6.1; ...", ...];
    keep_specifier = false (true: reuse the old version pin on every replacement; or write
    `{specifier}` in one replacement line to reuse it there only, e.g. "av{specifier}; ...");
    only_if = "<12" (optional: rewrite only exact pins, such as ==11.0.0, inside this range)."""

    name = "requirement-replace"

    def configure(self, options: dict[str, Any]) -> None:
        self.package = canonicalize_name(self.take(options, "package", str))
        self.templates = [str(r) for r in self.take(options, "replacement", list)]
        for template in self.templates:
            _checked(template.replace(SPECIFIER, ""))
        self.keep_specifier = self.take(options, "keep_specifier", bool, False)
        only_if = self.take(options, "only_if", str, None)
        try:
            self.only_if = None if only_if is None else SpecifierSet(only_if)
        except InvalidSpecifier:
            raise RuleError(f"option 'only_if' is not a version range: {only_if!r}") from None
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return (self.package.split("-")[0],)

    def rewrite_line(self, line: str) -> list[str] | None:
        parsed = RequirementLine.parse(line)
        if parsed is None or canonicalize_name(parsed.requirement.name) != self.package:
            return None
        old = parsed.requirement
        if self.only_if is not None and not _pinned_within(old.specifier, self.only_if):
            return None
        if old.marker is not None and any(v in str(old.marker) for v in ("platform_system", "sys_platform")):
            return None  # already decided per platform (by hand, or by this rule)
        ending = parsed.newline or "\n"
        lines = []
        for template in self.templates:
            new = Requirement(template.replace(SPECIFIER, str(old.specifier)))
            if self.keep_specifier:
                new.specifier = old.specifier
            new.marker = _and(old.marker, new.marker)
            lines.append(str(new) + ending)
        lines[0] = lines[0].removesuffix(ending) + parsed.comment + ending
        if not parsed.newline:  # the file's last line had no line ending: keep it that way
            lines[-1] = lines[-1].removesuffix(ending)
        return lines


class RequirementMarker(RequirementsRuleKind):
    """Options: packages = ["xformers", "triton"]; marker = 'platform_system != "Darwin"'."""

    name = "requirement-marker"

    def configure(self, options: dict[str, Any]) -> None:
        self.packages = {canonicalize_name(p) for p in self.take(options, "packages", list)}
        marker = self.take(options, "marker", str)
        try:
            self.marker = Marker(marker)
        except InvalidMarker as error:
            raise RuleError(f"option 'marker': {error}") from None
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return tuple(sorted(self.packages))

    def rewrite_line(self, line: str) -> list[str] | None:
        parsed = RequirementLine.parse(line)
        if parsed is None or canonicalize_name(parsed.requirement.name) not in self.packages:
            return None
        requirement = parsed.requirement
        if requirement.marker is not None and str(self.marker) in str(requirement.marker):
            return None  # already gated
        requirement.marker = _and(requirement.marker, self.marker)
        return [str(requirement) + parsed.comment + parsed.newline]


class RequirementDropOption(RequirementsRuleKind):
    """Options: pattern = 'download\\.pytorch\\.org/whl/cu' (a regex over option lines such as
    `--extra-index-url URL`, `--index-url URL`, `-f URL`)."""

    name = "requirement-drop-option"

    def configure(self, options: dict[str, Any]) -> None:
        pattern = self.take(options, "pattern", str)
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise RuleError(f"option 'pattern' is not a regular expression: {error}") from None
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        return ("-",)

    def rewrite_line(self, line: str) -> list[str] | None:
        stripped = line.strip()
        if stripped.startswith("-") and self.pattern.search(stripped):
            return []
        return None


SPECIFIER = "{specifier}"


def _pinned_within(specifier: SpecifierSet, allowed: SpecifierSet) -> bool:
    """True when `specifier` pins a version (==, ===, ~=) and every pin lies inside `allowed`."""
    pins = [s for s in specifier if s.operator in ("==", "===", "~=")]
    return bool(pins) and all(allowed.contains(p.version.removesuffix(".*"), prereleases=True) for p in pins)


def _checked(requirement: Any) -> str:
    if not isinstance(requirement, str):
        raise RuleError("option 'replacement' must be a list of requirement strings")
    try:
        Requirement(requirement)
    except InvalidRequirement as error:
        raise RuleError(f"option 'replacement': {error}") from None
    return requirement


def _and(first: Marker | None, second: Marker | None) -> Marker | None:
    if first is None or second is None:
        return first or second
    return Marker(f"({first}) and ({second})")
