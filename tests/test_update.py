"""`lsync-port update`: a ported git checkout brought to upstream's newer commit and ported again,
with git repositories made here (the fixture tree committed, then a second commit upstream)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, tree_hashes
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import Exit

runner = CliRunner()
INFERENCE = "scripts/inference.py"
NEW_LINE = "# upstream's second commit\n"


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def upstream_commit(upstream: Path) -> str:
    """Upstream changes a file that the port also changes (so a plain pull meets the port)."""
    path = upstream / INFERENCE
    path.write_text(NEW_LINE + path.read_text())
    git(upstream, "commit", "-qam", "second")
    return git(upstream, "rev-parse", "HEAD")


@pytest.fixture
def checkout(tmp_path) -> tuple[Path, Path]:
    """(upstream, a ported clone of its first commit)."""
    upstream = tmp_path / "upstream"
    shutil.copytree(FIXTURES / "latentsync", upstream)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "first")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    result = runner.invoke(app, ["apply", str(clone)])
    assert result.exit_code == 0, result.output
    return upstream, clone


def ported_at(clone: Path, commit: str) -> None:
    assert git(clone, "rev-parse", "HEAD") == commit
    status = json.loads(runner.invoke(app, ["status", str(clone), "--json"]).output)
    assert status["summary"] == "patched"
    text = (clone / INFERENCE).read_text()
    assert text.startswith(NEW_LINE) and "_lsync_port.device()" in text and '"cuda"' not in text


def test_update_takes_the_port_off_pulls_and_ports_again(checkout):
    upstream, clone = checkout
    new = upstream_commit(upstream)
    # What ComfyUI Manager's Update meets: git refuses to pull over the ported file.
    refused = subprocess.run(["git", "-C", str(clone), "pull", "-q"], capture_output=True, text=True)
    assert refused.returncode != 0 and INFERENCE in refused.stderr
    advice = runner.invoke(app, ["status", str(clone)]).output
    assert f"lsync-port update {clone}" in advice
    result = runner.invoke(app, ["update", str(clone)])
    assert result.exit_code == 0, result.output
    assert "→" in result.output and "Written." in result.output
    ported_at(clone, new)
    # Reverting the updated port gives the new upstream commit back, byte for byte.
    assert runner.invoke(app, ["revert", str(clone)]).exit_code == 0
    assert git(clone, "status", "--porcelain") == ""


def test_update_stops_and_names_the_users_own_edits(checkout):
    upstream, clone = checkout
    upstream_commit(upstream)
    edited = clone / "latentsync/utils/util.py"
    edited.write_text(edited.read_text() + "# my own change\n")
    before, head = tree_hashes(clone), git(clone, "rev-parse", "HEAD")
    result = runner.invoke(app, ["update", str(clone)])
    assert result.exit_code == Exit.REFUSED
    assert "latentsync/utils/util.py" in result.output and "keeps your edits" in result.output
    assert tree_hashes(clone) == before and git(clone, "rev-parse", "HEAD") == head


def test_a_pull_that_replaced_the_port_is_detected_and_ported_again(checkout):
    """ComfyUI Manager's Update run as `git checkout` + `git pull`: the ported files are upstream's
    again, while lsync-port's state and helper remain; the backups are of the old commit."""
    upstream, clone = checkout
    new = upstream_commit(upstream)
    git(clone, "checkout", "--", ".")
    git(clone, "pull", "-q")
    status = runner.invoke(app, ["status", str(clone)]).output
    assert "upstream's again" in status and f"lsync-port update {clone}" in status
    result = runner.invoke(app, ["update", str(clone)])
    assert result.exit_code == 0, result.output
    assert "git had already replaced" in result.output
    ported_at(clone, new)


def test_a_failed_pull_leaves_the_tree_ported_as_it_was(checkout):
    upstream, clone = checkout
    upstream_commit(upstream)
    (clone / "notes.txt").write_text("mine\n")
    git(clone, "add", "notes.txt")
    git(clone, "commit", "-qm", "a local commit: the pull cannot fast-forward")
    head = git(clone, "rev-parse", "HEAD")
    result = runner.invoke(app, ["update", str(clone)])
    assert result.exit_code == Exit.USAGE
    assert "git pull failed" in result.output and "ported again" in result.output
    assert git(clone, "rev-parse", "HEAD") == head
    assert json.loads(runner.invoke(app, ["status", str(clone), "--json"]).output)["summary"] == "patched"


def test_a_tree_that_is_not_a_git_checkout_is_told_what_to_do(fixture_tree):
    result = runner.invoke(app, ["update", str(fixture_tree)])
    assert result.exit_code == Exit.USAGE and "not a git checkout" in result.output


def test_a_port_committed_in_git_is_refused_with_the_fix(checkout):
    upstream, clone = checkout
    upstream_commit(upstream)
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "the port, committed")
    before = tree_hashes(clone)
    result = runner.invoke(app, ["update", str(clone)])
    assert result.exit_code == Exit.REFUSED and "committed in git" in result.output
    assert tree_hashes(clone) == before
