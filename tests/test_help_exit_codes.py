"""Every exit code a `--help` states is the Exit enum's: the number is filled in from the enum,
never typed (forecast's help once said "Exit 12 when the run fails"; 12 is the lock, it exits 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from latentsync_mps import cli
from latentsync_mps.cli.app import app
from latentsync_mps.cli.exits import Exit, exit_codes_named

CLI_SOURCE = "\n".join(path.read_text() for path in sorted(Path(cli.__file__).parent.rglob("*.py")))
# "Exit 6 when", "exits 9 when", "(exit 9)", and the second code of "Exit 0 when ..., 11 when ...".
MENTION = re.compile(r"(?i)\bexits? (\d+)\b(?:[^.;]*?, (\d+) when)?")
COMMANDS = sorted(get_command(app).commands)


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_exit_code_in_a_help_is_a_member_of_exit(command):
    codes = {member.value for member in Exit}
    for mention in MENTION.finditer(_help(command)):
        for number in filter(None, mention.groups()):
            assert int(number) in codes, f"`{command} --help` says {mention.group(0)!r}: no such exit code"


def test_no_help_text_types_an_exit_code():
    """cli/ writes `{Exit.NAME}` in docstrings and `Exit.NAME.value` in option help: a number
    typed by hand would go stale when the enum changes."""
    typed = [m.group(0) for m in re.finditer(r"(?i)\bexits? \(?\d+", CLI_SOURCE)]
    assert not typed, f"exit codes typed by hand in cli/: {typed}; write {{Exit.NAME}} instead"


@pytest.mark.parametrize(
    ("command", "member"),
    [
        ("forecast", Exit.FORECAST_FAILED),
        ("verify", Exit.VERIFY_FAILED),
        ("doctor", Exit.DOCTOR_BLOCKER),
        ("check-rules", Exit.RULES),
        ("apply", Exit.STRICT),
        ("scan", Exit.STRICT),
    ],
)
def test_each_command_states_its_own_code(command, member):
    numbers = {int(n) for m in MENTION.finditer(_help(command)) for n in m.groups() if n}
    assert member.value in numbers, f"`{command} --help` does not state exit {member.value} ({member.name})"
    if command == "forecast":
        assert Exit.LOCKED.value not in numbers, "forecast --help states the lock's exit code as its failure"


def test_a_placeholder_naming_no_member_fails_at_import():
    def command():
        """Exit {Exit.NO_SUCH_MEMBER} when it fails."""

    with pytest.raises(KeyError):
        exit_codes_named(command)


def test_no_message_types_an_exit_code():
    """What the commands print names codes from the enum too (doctor's "exit code 10")."""
    sources = Path(cli.__file__).parent.rglob("*.py")
    typed = [
        f"{path.name}: {m.group(0)}"
        for path in sources
        for m in re.finditer(r"(?i)\bexit(?: code)? \(?\d+", path.read_text())
    ]
    assert not typed, f"exit codes typed by hand: {typed}"
