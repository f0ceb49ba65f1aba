"""Shell-script kinds: the tree's own set-up and run scripts (`setup_env.sh`, `inference.sh`) made
right for a Mac, line by line.

A rule matches whole lines by a regular expression (`re.fullmatch` on the line without its
indentation and line ending); only the lines a rule rewrites change. Indentation, line endings
(CRLF too), a last line without an ending, and every other line are kept.

- shell-line-replace: one command line becomes another, written from the matched line:
  `sudo apt -y install libgl1` -> `if [ "$(uname)" != "Darwin" ]; then sudo apt -y install libgl1; fi`.
- shell-note: comment lines put above a matching line (the memory note above `python -m
  scripts.inference`); left out where the comment block right above already holds them.

Like every rule, each is idempotent: a rewritten line no longer matches its pattern (checked by
the rule's examples), and a note is not added twice.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any

from latentsync_mps.port.rules.base import Change, FileContext, RuleError, RuleKind, rewrite_line_by_line

# The matched line (without indentation and ending) in a shell-line-replace template.
LINE = "{line}"


class ShellRuleKind(RuleKind):
    """A rule kind that rewrites a shell script line by line. Unlike a requirements line, a line
    here may depend on the lines above it (a note is not repeated), so `rewrite_line` sees them."""

    language = "shell"

    def configure(self, options: dict[str, Any]) -> None:
        pattern = self.take(options, "pattern", str)
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise RuleError(f"option 'pattern' is not a regular expression: {error}") from None
        super().configure(options)

    def needles(self) -> tuple[str, ...]:
        # The pattern's first plain word (`sudo`, `conda`, `python`): a file without it cannot match.
        words = re.findall(r"[A-Za-z][A-Za-z0-9_.-]{2,}", self.pattern.pattern)
        return (words[0],) if words else ("",)

    def matches(self, line: str) -> bool:
        return self.pattern.fullmatch(_body(line).strip()) is not None

    @abstractmethod
    def rewrite_line(self, line: str, above: list[str]) -> list[str] | None:
        """The lines (with their endings) that replace `line`, or None to keep it; `above` holds
        the lines already written above it."""


def rewrite_shell(text: str, kinds: list[ShellRuleKind], ctx: FileContext) -> tuple[str, list[Change]]:
    """Every shell rule over the script, line by line (`rewrite_line_by_line`); a rule also sees the
    lines written above the one it is offered."""
    return rewrite_line_by_line(text, kinds, ctx, lambda kind, line, above: kind.rewrite_line(line, above))


class ShellLineReplace(ShellRuleKind):
    """Options: pattern = 'sudo apt(-get)? .*install .*' (the whole command, without indentation);
    replacement = 'if [ "$(uname)" != "Darwin" ]; then {line}; fi  # why' ({line}: the matched
    command). The replacement must not match the pattern again (the examples check it)."""

    name = "shell-line-replace"

    def configure(self, options: dict[str, Any]) -> None:
        self.replacement = self.take(options, "replacement", str)
        if LINE not in self.replacement:
            raise RuleError(f"option 'replacement' must contain {LINE} (the matched command)")
        super().configure(options)

    def rewrite_line(self, line: str, above: list[str]) -> list[str] | None:
        if not self.matches(line):
            return None
        body = _body(line)
        indent = body[: len(body) - len(body.lstrip())]
        return [indent + self.replacement.replace(LINE, body.strip()) + line[len(body) :]]


class ShellNote(ShellRuleKind):
    """Options: pattern = 'python -m scripts\\.inference.*' (the line the note goes above);
    lines = ["# On a Mac (lsync-port): ...", ...] (comment lines, each starting with "#")."""

    name = "shell-note"

    def configure(self, options: dict[str, Any]) -> None:
        self.lines = [str(line) for line in self.take(options, "lines", list)]
        if not self.lines or not all(line.startswith("#") and "\n" not in line for line in self.lines):
            raise RuleError("option 'lines' must be a list of one-line comments, each starting with '#'")
        super().configure(options)

    def rewrite_line(self, line: str, above: list[str]) -> list[str] | None:
        if not self.matches(line):
            return None
        block = []  # the comment block right above the line
        for previous in reversed(above):
            if not _body(previous).lstrip().startswith("#") or _body(previous).startswith("#!"):
                break
            block.insert(0, _body(previous).strip())
        if any(block[i : i + len(self.lines)] == self.lines for i in range(len(block))):
            return None
        body = _body(line)
        indent = body[: len(body) - len(body.lstrip())]
        ending = line[len(body) :] or _ending(above)
        return [indent + note + ending for note in self.lines] + [line]


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _ending(lines: list[str]) -> str:
    """The file's line ending, judged from the lines above (for a last line that has none)."""
    for line in reversed(lines):
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\n"
