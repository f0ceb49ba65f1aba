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
