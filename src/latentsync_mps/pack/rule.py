"""One rule entry as a rule file states it ([[rule]] in patches/), and the glob match its `files` use.
What a rule *does* is its kind's (port/rules/)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from wcmatch import glob as wcglob


@dataclass(frozen=True)
class Example:
    """A before/after pair that the test suite runs. `after is None` means: must stay unchanged.
    A detection-only rule's examples have `report` instead: the lines it must report."""

    before: str
    after: str | None
    path: str
    report: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Expectation:
    """The rule must match at least `min` times in files matching `file`, for these releases."""

    file: str
    releases: SpecifierSet
    min: int = 1
    profile: str | None = None  # only for this profile (a rule file included by several profiles)


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    summary: str
    files: tuple[str, ...]
    exclude: tuple[str, ...]
    releases: SpecifierSet
    expect: tuple[Expectation, ...]
    examples: tuple[Example, ...]
    options: Mapping[str, Any]
    source: str  # the rule file, for messages
    profile: str
    default: bool = True  # off-by-default rules run only when named with --rules
    # The pack files its options name, read by the loader: option -> content (ruleset.py). Out
    # of repr, which the no-op digest hashes (port/planning.py), so that it stays as it was.
    inputs: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def covers_release(self, version: Version | None) -> bool:
        return version is None or self.releases.contains(version, prereleases=True)

    def covers_path(self, relpath: str) -> bool:
        return path_matches(relpath, self.files) and not path_matches(relpath, self.exclude)


def path_matches(relpath: str, globs: tuple[str, ...] | list[str]) -> bool:
    """Glob match on POSIX relative paths (wcmatch): `*` stays within a folder, `**/` spans any
    folders (none included), dot-files match like any other."""
    return _matcher(tuple(globs)).match(relpath)


@functools.cache
def _matcher(globs: tuple[str, ...]) -> Any:
    return wcglob.compile(globs, flags=_GLOB_FLAGS)


_GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.DOTGLOB
