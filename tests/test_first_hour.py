"""The rough edges a new user met in the first hour (issue 24): each test fails without its fix."""

from __future__ import annotations

from typer.testing import CliRunner

from latentsync_mps import __version__
from latentsync_mps.cli import app

runner = CliRunner()


def test_version_prints_the_version_and_exits_0():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"lsync-port {__version__}"


HELPER_LINE = "def device(preferred: str | None = None) -> str:"  # a line of the runtime helper's source


def test_demo_prints_the_report_and_summary_without_diffs(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "Files" in result.output and "Written." in result.output
    assert "+++ " not in result.output and HELPER_LINE not in result.output
    assert len(result.output.splitlines()) < 200, "demo prints more than a report"


def test_demo_diff_shows_ported_files_and_names_new_ones(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "d"), "--diff"])
    assert result.exit_code == 0, result.output
    assert "--- a/scripts/inference.py\n+++ b/scripts/inference.py" in result.output
    assert "new file latentsync/_lsync_port.py:" in result.output and "--show-new" in result.output
    assert HELPER_LINE not in result.output


def test_new_files_diff_from_dev_null(tmp_path, fixture_tree):
    shown = runner.invoke(app, ["demo", str(tmp_path / "d"), "--show-new"])
    assert shown.exit_code == 0, shown.output
    assert "--- /dev/null\n+++ b/latentsync/_lsync_port.py" in shown.output and HELPER_LINE in shown.output
    assert "--- a/latentsync/_lsync_port.py" not in shown.output
    dry = runner.invoke(app, ["apply", str(fixture_tree), "--dry-run", "--diff"])
    assert dry.exit_code == 0, dry.output
    assert "--- /dev/null\n+++ b/latentsync/_lsync_port.py" in dry.output
