"""The rough edges a new user met in the first hour (issue 24): each test fails without its fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
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


def _in_a_pipe(*args: str, columns: str | None) -> str:
    """The console script's stdout as a pipe gives it, at COLUMNS (None: unset, rich's 80)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    result = subprocess.run(
        [sys.executable, "-m", "latentsync_mps.cli", *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _whole(rule_id: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(rule_id)}(?![\w-])", text) is not None


@pytest.mark.parametrize("columns", ["80", None])
def test_rule_ids_are_never_cut_at_80_columns_or_in_a_pipe(fixture_tree, pack, columns):
    report = _in_a_pipe("apply", str(fixture_tree), "--dry-run", columns=columns)
    listing = _in_a_pipe("list-rules", columns=columns)
    for text in (report, listing):
        assert "…" not in text
        tables = [line for line in text.splitlines() if "│" in line or "┃" in line]
        assert tables and max(map(len, tables)) <= 80, "a table is wider than 80 columns"
    ported = {m.group(1) for m in re.finditer(r"^ *(\S+) .*│", report, re.M)}
    assert "latentsync/pipelines/lipsync_pipeline.py" in ported, "a path in the Files table was cut"
    every_id = {rule.id for profile in pack.profiles.values() for rule in profile.rules}
    assert [i for i in every_id if not _whole(i, listing)] == []
    matched = json.loads(_in_a_pipe("apply", str(fixture_tree), "--dry-run", "--json", columns=columns))["matches"]
    assert [i for i in matched if not _whole(i, report)] == []


def test_scan_of_a_ported_tree_accounts_for_the_helper_without_scanning_it(fixture_tree):
    assert runner.invoke(app, ["apply", str(fixture_tree)]).exit_code == 0
    scanned = runner.invoke(app, ["scan", str(fixture_tree), "--json"])
    assert scanned.exit_code == 0, scanned.output
    report = json.loads(scanned.output)
    assert "latentsync/_lsync_port.py" in report["not_scanned"]
    assert [f for f in report["findings"] if f["path"].startswith("latentsync/_lsync_port")] == []
    text = runner.invoke(app, ["scan", str(fixture_tree)]).output
    assert "lsync-port's runtime helper: latentsync/_lsync_port.py" in text and "not scanned" in text
    assert "latentsync/_lsync_port.py:" not in text  # no finding at a line of it


@pytest.mark.parametrize("value", ["float8", "float16"])
def test_doctor_gives_one_verdict_per_fact(monkeypatch, value):
    """LATENTSYNC_DTYPE=float8 was a blocker in the device row and "ok" in the environment row."""
    pytest.importorskip("torch", reason="the device row needs the runtime helper, which imports torch")
    monkeypatch.setenv("LATENTSYNC_DTYPE", value)
    monkeypatch.delenv("LATENTSYNC_DEVICE", raising=False)
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).output)
    naming = {c["name"]: c["status"] for c in report["checks"] if f"LATENTSYNC_DTYPE={value}" in c["detail"]}
    naming |= {c["name"]: c["status"] for c in report["checks"] if f"LATENTSYNC_DTYPE='{value}'" in c["detail"]}
    assert len(naming) <= 1, f"LATENTSYNC_DTYPE={value} judged in several rows: {naming}"
    by_name = {c["name"]: c for c in report["checks"]}
    if value == "float8":
        assert by_name["device"]["status"] == "blocker" and "float8" in by_name["device"]["detail"]
    assert "LATENTSYNC_DTYPE: see the device row" in by_name["environment"]["detail"]


def _messages(root) -> list[tuple[str, str]]:
    """(file, text) of every string literal passed to print() or warnings.warn() under root."""
    import ast

    found = []
    for path in sorted(p for p in root.rglob("*.py") if ".lsync-port" not in p.parts):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("print", "warnings.warn"):
                for arg in node.args:
                    texts = [v.value for v in ast.walk(arg) if isinstance(v, ast.Constant) and isinstance(v.value, str)]
                    found += [(path.relative_to(root).as_posix(), text) for text in texts]
    return found


def test_the_ported_trees_messages_name_the_device_the_helper_chose(fixture_tree):
    """scripts/inference.py printed "Running on cuda" on a Mac; whisper warned that CUDA was available."""
    cuda_in_use = re.compile(r"\bon cuda\b|\bcuda is available", re.IGNORECASE)
    before = [m for m in _messages(fixture_tree) if cuda_in_use.search(m[1])]
    assert {f for f, _ in before} == {"scripts/inference.py", "latentsync/whisper/whisper/transcribe.py"}
    assert runner.invoke(app, ["apply", str(fixture_tree)]).exit_code == 0
    assert [m for m in _messages(fixture_tree) if cuda_in_use.search(m[1])] == []
    inference = (fixture_tree / "scripts/inference.py").read_text()
    assert 'print(f"Running on {_lsync_port.device()} with {dtype}")' in inference
