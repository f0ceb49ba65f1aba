"""ffmpeg-command: the `ffmpeg` a tree runs by name becomes the one the runtime helper finds.

`subprocess.run(["ffmpeg", "-version"])`, `f"ffmpeg -y -i {video} ..."` run with `shell=True`, and
ffmpeg-python's `.run(cmd=["ffmpeg", "-nostdin"])` find ffmpeg on PATH only. An app started from
the Dock (ComfyUI Desktop) does not see Homebrew's PATH, and Desktop ships no ffmpeg; the helper's
`ffmpeg()` looks on PATH, then in Homebrew's prefixes, then takes imageio-ffmpeg's bundled binary,
and names the fix when there is none.

    ["ffmpeg", "-version"]            ->  [_lsync_port.ffmpeg(), "-version"]
    cmd="ffmpeg"                      ->  cmd=_lsync_port.ffmpeg()
    f"ffmpeg -y -i {src} {dst}"       ->  f"{_lsync_port.ffmpeg_shell()} -y -i {src} {dst}"
    "ffmpeg -version"                 ->  f"{_lsync_port.ffmpeg_shell()} -version"

A command line is a string that starts with `ffmpeg` followed by an option (`ffmpeg -...`), so text
such as "ffmpeg not found" is left alone; `ffmpeg_shell()` is the path quoted for a shell (the
bundled binary's path may hold spaces). An argument list is a list or tuple whose first element
is the string "ffmpeg". Bytes are left alone.

No options. The detection kind report-ffmpeg-command reports what this kind rewrites (the same
test, `ffmpeg_use`), so what a rule pack leaves unported is residue.
"""

from __future__ import annotations

import re
from typing import Any

import libcst as cst

from latentsync_mps.port.rules.base import PythonRuleKind, RuleCommand
from latentsync_mps.port.rules.report import DetectionFinder, PythonDetectionKind

_COMMAND_LINE = re.compile(r"ffmpeg(?=\s+-)")
_PROGRAM = "ffmpeg"


def command_line(node: cst.SimpleString | cst.FormattedString) -> bool:
    """A shell command line that starts by running ffmpeg: "ffmpeg -..." (plain or f-string)."""
    if isinstance(node, cst.SimpleString):
        if "b" in node.prefix.lower():
            return False
        text = node.value[len(node.prefix) + len(node.quote) :]
    else:
        first = node.parts[0] if node.parts else None
        if not isinstance(first, cst.FormattedStringText):
            return False
        text = first.value
    return _COMMAND_LINE.match(text) is not None


def program_string(node: cst.List | cst.Tuple | cst.Arg) -> cst.SimpleString | None:
    """The "ffmpeg" string that names the program: an argument list's first element, or the
    value of a `cmd=` keyword (ffmpeg-python's run)."""
    if isinstance(node, cst.Arg):
        value = node.value if node.keyword is not None and node.keyword.value == "cmd" else None
    else:
        value = node.elements[0].value if node.elements else None
    if isinstance(value, cst.SimpleString) and value.evaluated_value == _PROGRAM:
        return value
    return None


class _ProgramNames:
    """Collects, while visiting, the "ffmpeg" strings that name the program (by identity)."""

    def __init__(self) -> None:
        self.heads: set[int] = set()

    def note(self, node: cst.List | cst.Tuple | cst.Arg) -> None:
        head = program_string(node)
        if head is not None:
            self.heads.add(id(head))

    def __contains__(self, node: cst.CSTNode) -> bool:
        return id(node) in self.heads


class _NotesPrograms:
    """Both visitors note each list, tuple and argument, where a string may be a command's program."""

    programs: _ProgramNames

    def visit_List(self, node: cst.List) -> None:
        self.programs.note(node)

    def visit_Tuple(self, node: cst.Tuple) -> None:
        self.programs.note(node)

    def visit_Arg(self, node: cst.Arg) -> None:
        self.programs.note(node)


class FfmpegCommandCommand(_NotesPrograms, RuleCommand["FfmpegCommand"]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.programs = _ProgramNames()

    def leave_SimpleString(self, original_node: cst.SimpleString, updated_node: cst.SimpleString) -> Any:
        if original_node in self.programs:
            new: cst.BaseExpression = self.helper("ffmpeg()")
        elif command_line(original_node):
            prefix = "r" if "r" in original_node.prefix.lower() else ""
            quote = original_node.quote
            body = original_node.value[len(original_node.prefix) + len(quote) : -len(quote)]
            rest = body[len(_PROGRAM) :].replace("{", "{{").replace("}", "}}")
            new = cst.FormattedString(
                parts=[cst.FormattedStringExpression(self.helper("ffmpeg_shell()")), cst.FormattedStringText(rest)],
                start=f"f{prefix}{quote}",
                end=quote,
            )
        else:
            return updated_node
        self.record(original_node, new)
        return new

    def leave_FormattedString(self, original_node: cst.FormattedString, updated_node: cst.FormattedString) -> Any:
        if not command_line(original_node):
            return updated_node
        first = updated_node.parts[0]
        assert isinstance(first, cst.FormattedStringText)
        parts = [
            cst.FormattedStringExpression(self.helper("ffmpeg_shell()")),
            first.with_changes(value=first.value[len(_PROGRAM) :]),
            *updated_node.parts[1:],
        ]
        new = updated_node.with_changes(parts=parts)
        self.record(original_node, new)
        return new


class FfmpegCommand(PythonRuleKind):
    name = "ffmpeg-command"
    command = FfmpegCommandCommand

    def needles(self) -> tuple[str, ...]:
        return (f'"{_PROGRAM}', f"'{_PROGRAM}")


class _FfmpegFinder(_NotesPrograms, DetectionFinder):
    kind: ReportFfmpegCommand

    def __init__(self, kind: ReportFfmpegCommand, path: str) -> None:
        super().__init__(kind, path)
        self.programs = _ProgramNames()

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        if node in self.programs or command_line(node):
            self.add(node)

    def visit_FormattedString(self, node: cst.FormattedString) -> None:
        if command_line(node):
            self.add(node)


class ReportFfmpegCommand(PythonDetectionKind):
    """report-ffmpeg-command: ffmpeg run by name (an argument list, `cmd="ffmpeg"`, a command line
    "ffmpeg -..."), which finds it on PATH only: what the rewriting kind ffmpeg-command ports."""

    name = "report-ffmpeg-command"
    finder_class = _FfmpegFinder

    def needles(self) -> tuple[str, ...]:
        return (f'"{_PROGRAM}', f"'{_PROGRAM}")
