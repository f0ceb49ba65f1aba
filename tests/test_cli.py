"""The lsync-port command as a user meets it: output, JSON, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
from conftest import tree_hashes
from typer.testing import CliRunner

from latentsync_mps.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_teaches_the_commands_and_exit_codes():
    result = run("--help")
    assert result.exit_code == 0
    for word in (
        "apply",
        "revert",
        "status",
        "scan",
        "list-rules",
        "explain",
        "demo",
        "Exit codes",
        "LATENTSYNC_DEVICE",
    ):
        assert word in result.output


def test_apply_dry_run_diff_shows_changes_and_writes_nothing(fixture_tree):
    before = tree_hashes(fixture_tree)
    result = run("apply", str(fixture_tree), "--dry-run", "--diff")
    assert result.exit_code == 0, result.output
    assert "+    is_fp16_supported = _lsync_port.fp16_supported()" in result.output
    assert "Dry run: nothing written." in result.output
    assert tree_hashes(fixture_tree) == before


def test_apply_json_report(fixture_tree):
    result = run("apply", str(fixture_tree), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["profile"] == "latentsync" and report["release"] == "1.6"
    assert report["written"] is True
    assert report["drift"] == [] and report["residue"] == []
    assert report["matches"]["interpolate-float32"] == 4  # 2 in Upsample3D, the mask, the face resize
    assert {"path", "line", "rule_id", "before", "after"} <= set(report["changes"][0])
    again = json.loads(run("apply", str(fixture_tree), "--json").output)
    assert again["written"] is False


def test_strict_fails_on_drift_and_residue(fixture_tree):
    script = fixture_tree / "scripts/inference.py"
    script.write_text(script.read_text().replace("torch.cuda.get_device_capability()[0] > 7", "True"))
    assert run("apply", str(fixture_tree), "--dry-run").exit_code == 0
    result = run("apply", str(fixture_tree), "--dry-run", "--strict")
    assert result.exit_code == 6
    assert "fp16-gate: expected at least 1 in scripts/inference.py, found 0" in result.output


def test_status_and_revert_round_trip(fixture_tree):
    pristine = tree_hashes(fixture_tree)
    assert "not patched" in run("status", str(fixture_tree)).output
    assert run("revert", str(fixture_tree)).exit_code == 4
    assert run("apply", str(fixture_tree)).exit_code == 0
    status = run("status", str(fixture_tree), "--json")
    assert json.loads(status.output)["summary"] == "patched"
    result = run("revert", str(fixture_tree))
    # Removed: the two files apply created, the runtime helper and the release's forecast figures.
    assert result.exit_code == 0 and re.search(r"Reverted \d+ file\(s\), removed 2\.", result.output)
    assert tree_hashes(fixture_tree) == pristine


def test_scan_counts_by_kind_and_strict(fixture_tree):
    result = run("scan", str(fixture_tree), "--json")
    assert result.exit_code == 0
    counts = json.loads(result.output)["counts"]
    assert counts["cuda-literal"] >= 3 and counts["no-mac-wheel"] == 2
    assert run("scan", str(fixture_tree), "--strict").exit_code == 6
    run("apply", str(fixture_tree))
    assert run("scan", str(fixture_tree), "--strict").exit_code == 0


def test_list_rules_and_explain():
    listing = run("list-rules", "--profile", "latentsync")
    assert listing.exit_code == 0 and "interpolate-float32" in listing.output
    assert run("list-rules", "--profile", "nope").exit_code == 2
    explained = run("explain", "interpolate-float32")
    assert explained.exit_code == 0
    assert "black masks" in explained.output and "before" in explained.output and "after" in explained.output
    assert run("explain", "no-such-rule").exit_code == 2


def test_demo_ports_the_packaged_example(tmp_path):
    target = tmp_path / "demo"
    result = run("demo", str(target), "--diff")
    assert result.exit_code == 0, result.output
    assert "Written." in result.output and "_lsync_port.device()" in result.output
    assert (target / "latentsync/_lsync_port.py").exists()
    assert run("demo", str(target)).exit_code == 2  # not empty any more


def test_unknown_profile_and_rule_are_usage_errors(fixture_tree):
    assert run("apply", str(fixture_tree), "--profile", "nope").exit_code == 2
    assert run("apply", str(fixture_tree), "--rules", "nope").exit_code == 2


def test_console_script_runs_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "latentsync_mps.cli", "apply", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "not a recognised upstream tree" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_relative_python_is_made_absolute_for_the_child(tmp_path, monkeypatch):
    """verify, forecast and doctor start the tree's interpreter in a folder of their own: a relative
    --python (`.venv/bin/python`) must name the same file there."""
    from latentsync_mps.cli import inputs
    from latentsync_mps.features.doctor import resolve_python

    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python"
    python.symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert inputs.interpreter("bin/python") == str(python)
    assert resolve_python("bin/python") == (str(python), True)
    assert inputs.interpreter(None) is None
    with pytest.raises(typer.Exit):
        inputs.interpreter("bin/nothing")
