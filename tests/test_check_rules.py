"""`lsync-port check-rules DIR`: a rule pack validated and its examples run, pass/fail each."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack.paths import patches_dir

runner = CliRunner()


def small_pack(tmp_path):
    """A pack of one's own: the latentsync profile with only its device rules, no findings/."""
    pack = tmp_path / "pack"
    (pack / "latentsync").mkdir(parents=True)
    for name in ("profile.toml", "device.toml"):
        shutil.copy(patches_dir() / "latentsync" / name, pack / "latentsync" / name)
    return pack


def test_a_good_pack_passes_every_example(tmp_path):
    pack = small_pack(tmp_path)
    result = runner.invoke(app, ["check-rules", str(pack), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["failed"] == 0
    names = [row["example"] for row in report["examples"]]
    assert any(n.startswith("latentsync:") for n in names)
    # Without a findings/ folder of its own, the pack gets the bundled detection-only rules.
    assert any(n.startswith("findings:report-decord:") for n in names)


def test_a_wrong_example_fails_with_its_name_and_exit_9(tmp_path):
    pack = small_pack(tmp_path)
    findings = pack / "findings"
    findings.mkdir()
    (findings / "mine.toml").write_text(
        """
[[rule]]
id = "report-half-mine"
kind = "report-call"
summary = "x"
files = ["**/*.py"]
options = { method = "half", args = "none", finding = "fp16-hardcoded", severity = "warning", why = "w", fix = "f" }
[[rule.example]]
before = "a = 1\\nm = m.half()\\n"
report = [1]
"""
    )
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    assert "FAIL findings:report-half-mine:1" in result.output
    assert "reported line(s) [2], the example says [1]" in result.output
    assert "pass latentsync:" in result.output


def test_a_malformed_pack_is_one_line_naming_file_and_rule(tmp_path):
    pack = small_pack(tmp_path)
    (pack / "latentsync" / "broken.toml").write_text('[[rule]]\nid = "oops"\nkind = "no-such-kind"\n')
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    assert "broken.toml, rule 'oops': unknown kind 'no-such-kind'" in result.output
    assert "Traceback" not in result.output


def test_not_a_folder_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["check-rules", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no such directory" in result.output


def test_rule_order_and_kind_placement_are_checked(tmp_path):
    pack = small_pack(tmp_path)
    (pack / "order.toml").write_text('groups = [["device-literal"], ["no-such-kind", "*"]]\n')
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    assert "order.toml: unknown kind(s) no-such-kind" in result.output
    (pack / "order.toml").unlink()
    (pack / "latentsync" / "report.toml").write_text(
        '[[rule]]\nid = "r"\nkind = "report-call"\nsummary = "s"\nfiles = ["*.py"]\n'
        'options = { method = "half", finding = "float64", severity = "warning", why = "w", fix = "f" }\n'
        '[[rule.example]]\nbefore = "x.half()\\n"\nreport = [1]\n'
    )
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    assert "kind 'report-call' only reports: its rules go in findings/" in result.output


def test_supersedes_names_another_detection_rule(tmp_path):
    pack = small_pack(tmp_path)
    shutil.copytree(patches_dir() / "findings", pack / "findings")
    rules = pack / "findings" / "python.toml"
    rules.write_text(
        rules.read_text().replace('supersedes = ["report-torch-cuda"]', 'supersedes = ["report-torch-cudaa"]', 1)
    )
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    assert "rule 'report-cuda-flag': option 'supersedes': no other detection rule 'report-torch-cudaa'" in result.output


def test_a_bad_texts_file_is_one_line_at_load(tmp_path):
    pack = small_pack(tmp_path)
    shutil.copytree(patches_dir() / "findings", pack / "findings")
    (pack / "torch-cuda.toml").write_text('[default]\nseverity = "error"\n')  # no why, no fix
    result = runner.invoke(app, ["check-rules", str(pack)])
    assert result.exit_code == 9
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "rule 'report-torch-cuda': option 'texts'" in lines[0], result.output
