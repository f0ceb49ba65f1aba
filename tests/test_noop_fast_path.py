"""The early no-op check (engine/noop.py, cli/early_apply.py): a re-apply on a tree nothing touched
since is answered from the manifest before any rule is loaded, with the same report and exit code
as the full plan's no-op; anything the plan depends on that changed makes it plan in full."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from latentsync_mps.cli import early_apply
from latentsync_mps.cli.app import app
from latentsync_mps.cli.exits import Exit
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port import noop, transaction
from latentsync_mps.port.manifest import STATE_DIR, TreeLock
from latentsync_mps.port.outcome import Drift
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.rulepack import load
from latentsync_mps.port.tree import SMALL_FILE

# Runs the console entry point and says on stderr whether libcst was imported: the early answer
# must not need it.
ENTRY = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('libcst loaded' if 'libcst' in sys.modules else 'early answer', file=sys.stderr))\n"
    "from latentsync_mps.cli import main\n"
    "main()\n"
)
SUBSET = ["interpolate-float32", "torch-cuda-calls"]  # leaves residue and warnings to report


def lsync(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
        timeout=300,
    )


def applied(tree: Path, pack_root: Path | None = None, rule_ids: list[str] | None = None) -> Path:
    transaction.commit(make_plan(tree, load(pack_root or patches_dir()), rule_ids=rule_ids))
    return tree


def answered_early(tree: Path, pack_root: Path | None = None, profile=None, rule_ids=None) -> bool:
    return noop.stored_plan(tree, pack_root or patches_dir(), profile, rule_ids) is not None


def drop_the_record(tree: Path) -> None:
    path = tree / STATE_DIR / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["result"].pop(noop.NOOP, None)
    path.write_text(json.dumps(manifest))


def test_the_early_answer_is_the_full_no_op_report(fixture_tree):
    applied(fixture_tree, rule_ids=SUBSET)
    runs = {}
    for name in ("early", "full"):
        if name == "full":
            drop_the_record(fixture_tree)  # the plan, then, finds the digest unchanged
        for options in (["--json"], [], ["--dry-run"], ["--strict"], ["--dry-run", "--json", "--diff"]):
            done = lsync("apply", str(fixture_tree), "--rules", ",".join(SUBSET), *options)
            runs[name, tuple(options)] = (done.stdout, done.returncode, done.stderr.strip().splitlines()[-1])
            if name == "full":
                drop_the_record(fixture_tree)  # a real apply stored it again
    for (name, options), (out, code, how) in runs.items():
        if name == "early":
            assert how == "early answer", options
            assert (out, code) == runs["full", options][:2], options
        else:
            assert how == "libcst loaded", options
    report = json.loads(runs["early", ("--json",)][0])
    assert report["unchanged"] and report["residue"] and report["findings"] != report["residue"]
    assert runs["early", ("--strict",)][1] == Exit.STRICT
    text = runs["early", ()][0]
    assert "Nothing to do" in text and "Residue on the inference path" in text


def test_the_stored_records_rebuild_what_the_report_reads():
    """The no-op answer rebuilds the report's own records (outcome.py) from the manifest's result."""
    from latentsync_mps.port.outcome import Finding

    finding = Finding("a.py", 3, "torch-cuda", "error", "torch.cuda.x()", "why", "fix")
    assert Finding(**finding.to_json()).to_json() == finding.to_json()
    drift = Drift("rule", "a.py", 2, 0)
    assert Drift(**dataclasses.asdict(drift)) == drift


def test_a_changed_tree_file_is_planned_in_full(fixture_tree):
    applied(fixture_tree)
    assert answered_early(fixture_tree)
    script = fixture_tree / "latentsync" / "pipelines" / "lipsync_pipeline.py"
    script.write_text(script.read_text() + "\nx = torch.cuda.is_available()\n")
    assert not answered_early(fixture_tree)
    plan = make_plan(fixture_tree, load(patches_dir()))
    assert not plan.unchanged and [p.path for p in plan.problems] == [script.relative_to(fixture_tree).as_posix()]


def test_a_new_or_removed_file_is_planned_in_full(fixture_tree):
    applied(fixture_tree)
    (fixture_tree / "configs" / "extra.yaml").write_text("a: 1\n")
    assert not answered_early(fixture_tree)
    (fixture_tree / "configs" / "extra.yaml").unlink()
    assert answered_early(fixture_tree)


def test_a_large_file_is_judged_by_size_and_mtime_and_the_record_is_renewed(fixture_tree):
    video = fixture_tree / "assets" / "demo.mp4"
    video.parent.mkdir(exist_ok=True)
    video.write_bytes(b"\0" * (SMALL_FILE + 1))
    applied(fixture_tree)
    assert answered_early(fixture_tree)
    os.utime(video, ns=(1, 1))
    assert not answered_early(fixture_tree)
    # The full plan finds nothing to do; its commit stores the key of the tree as it is now.
    plan = make_plan(fixture_tree, load(patches_dir()))
    assert plan.unchanged
    transaction.commit(plan)
    assert answered_early(fixture_tree)


def test_a_changed_rule_file_is_planned_in_full(fixture_tree, tmp_path):
    rules = shutil.copytree(patches_dir(), tmp_path / "rules")
    applied(fixture_tree, rules)
    assert answered_early(fixture_tree, rules)
    device = rules / "latentsync" / "device.toml"
    device.write_text(device.read_text() + "\n# a comment is a change too\n")
    assert not answered_early(fixture_tree, rules)


def test_lsync_port_patches_elsewhere(fixture_tree, tmp_path):
    applied(fixture_tree)
    # The same rules installed elsewhere: the same answer (the key names files inside the pack).
    same = shutil.copytree(patches_dir(), tmp_path / "elsewhere" / "patches")
    assert answered_early(fixture_tree, same)
    # Other rules there: plan in full, through the command line too.
    other = shutil.copytree(patches_dir(), tmp_path / "other" / "patches")
    order = other / "order.toml"
    order.write_text(order.read_text() + "\n")
    assert not answered_early(fixture_tree, other)
    done = lsync("apply", str(fixture_tree), "--dry-run", env={"LSYNC_PORT_PATCHES": str(other)})
    assert done.returncode == 0 and done.stderr.strip().endswith("libcst loaded")
    done = lsync("apply", str(fixture_tree), "--dry-run", env={"LSYNC_PORT_PATCHES": str(same)})
    assert done.returncode == 0 and done.stderr.strip().endswith("early answer")


def test_other_options_are_planned_in_full(fixture_tree):
    applied(fixture_tree)
    assert answered_early(fixture_tree, profile=None, rule_ids=None)
    assert not answered_early(fixture_tree, rule_ids=SUBSET)
    assert not answered_early(fixture_tree, profile="latentsync")
    assert not answered_early(fixture_tree, profile="comfyui-latentsyncwrapper")
    done = lsync("apply", str(fixture_tree), "--dry-run", "--json", "--rules", ",".join(SUBSET))
    assert done.stderr.strip().endswith("libcst loaded")
    assert not json.loads(done.stdout)["unchanged"]


def test_another_version_or_changed_package_code_is_planned_in_full(fixture_tree, tmp_path, monkeypatch):
    applied(fixture_tree)
    # lsync-port installed elsewhere, byte for byte the same: the same answer.
    package = shutil.copytree(noop._PACKAGE, tmp_path / "site-packages" / "latentsync_mps")
    monkeypatch.setattr(noop, "_PACKAGE", package)
    assert answered_early(fixture_tree)
    rewrite = package / "port" / "rewrite.py"
    rewrite.write_text(rewrite.read_text() + "\n# changed\n")
    assert not answered_early(fixture_tree)
    monkeypatch.undo()
    assert answered_early(fixture_tree)
    monkeypatch.setattr(noop, "__version__", "9.9.9")
    assert not answered_early(fixture_tree)


def test_a_tree_that_is_not_applied_or_is_mid_apply_is_planned_in_full(fixture_tree):
    assert not answered_early(fixture_tree)
    applied(fixture_tree)
    path = fixture_tree / STATE_DIR / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "state": "applying"}))
    assert not answered_early(fixture_tree)
    path.write_text("{ not json")
    assert not answered_early(fixture_tree)  # the full plan reports the corrupt manifest
    assert not answered_early(fixture_tree / "no-such-folder")


def test_the_early_answer_waits_for_the_lock(fixture_tree):
    applied(fixture_tree)
    with TreeLock(fixture_tree, "test holds it"):
        done = lsync("apply", str(fixture_tree), env={"LSYNC_PORT_LOCK_WAIT": "0.2"})
        assert done.returncode == Exit.LOCKED and "test holds it" in done.stderr
        done = lsync("apply", str(fixture_tree), "--dry-run")  # a dry run takes no lock
        assert done.returncode == 0 and done.stderr.strip().endswith("early answer")


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--help"],
        ["apply"],
        ["apply", "TREE", "--rules"],
        ["apply", "TREE", "--jso"],  # no abbreviations: typer has none
        ["apply", "TREE", "--unknown"],
        ["apply", "TREE", "OTHER"],
        ["status", "TREE"],
    ],
)
def test_anything_but_a_plain_apply_goes_to_typer(fixture_tree, argv):
    applied(fixture_tree)
    assert early_apply.reapply_early(["apply", str(fixture_tree), "--dry-run", "--json"]) is True  # it would answer
    assert early_apply.reapply_early([str(fixture_tree) if a == "TREE" else a for a in argv]) is False


def test_the_early_parser_knows_apply_s_options_as_typer_does():
    import typer.main

    command = typer.main.get_command(app).commands["apply"]
    typer_options = sorted(opt for p in command.params for opt in p.opts if opt.startswith("-"))
    parser = early_apply._ApplyOptions()
    early_options = sorted(opt for action in parser._actions for opt in action.option_strings)
    assert early_options == typer_options
    flags = {opt for p in command.params if getattr(p, "is_flag", False) for opt in p.opts}
    assert flags == {opt for a in parser._actions if a.nargs == 0 for opt in a.option_strings}


def _answers(tree: Path, *options: str) -> dict[str, tuple[str, int, str]]:
    """The first apply, then the re-apply answered early and the one planned in full (the no-op
    record dropped, so the plan's digest decides): (stdout, exit code, which path answered)."""
    runs = {}
    for name in ("first", "early", "full"):
        if name == "full":
            drop_the_record(tree)
        done = lsync("apply", str(tree), *options)
        runs[name] = (done.stdout, done.returncode, done.stderr.strip().splitlines()[-1])
    return runs


def test_a_re_apply_after_problems_reports_them_again_with_the_same_exit_code(fixture_tree):
    broken = fixture_tree / "latentsync" / "broken.py"
    broken.write_text("import torch\nx = torch.cuda.is_available(\n")  # a candidate that cannot be parsed
    runs = _answers(fixture_tree, "--json")
    problems = [{"path": "latentsync/broken.py", "reason": json.loads(runs["first"][0])["problems"][0]["reason"]}]
    assert runs["first"][1] == Exit.PARTIAL and "cannot be parsed" in problems[0]["reason"]
    for name in ("early", "full"):
        out, code, how = runs[name]
        assert how == ("early answer" if name == "early" else "libcst loaded"), name
        report = json.loads(out)
        assert report["unchanged"] and report["problems"] == problems, name
        assert code == Exit.PARTIAL, name
    text = lsync("apply", str(fixture_tree))
    assert text.returncode == Exit.PARTIAL
    assert "not processed: latentsync/broken.py: cannot be parsed" in text.stdout
    assert "Nothing to do" in text.stdout and "1 problem(s)" in text.stdout


def test_a_file_edited_by_hand_stays_a_problem_on_every_re_apply(fixture_tree):
    applied(fixture_tree)
    (fixture_tree / "predict.py").write_text("# edited by hand\n")
    codes = [lsync("apply", str(fixture_tree), "--json") for _ in range(3)]
    for done in codes:
        assert done.returncode == Exit.PARTIAL, done.stdout
        assert [p["path"] for p in json.loads(done.stdout)["problems"]] == ["predict.py"]
    assert codes[-1].stderr.strip().splitlines()[-1] == "early answer"


def test_strict_exits_as_the_first_apply_did_on_a_no_op_re_apply(fixture_tree):
    runs = _answers(fixture_tree, "--strict", "--rules", ",".join(SUBSET))
    assert runs["first"][1] == Exit.STRICT
    assert [runs[name][1] for name in ("early", "full")] == [Exit.STRICT] * 2
    assert [runs[name][2] for name in ("early", "full")] == ["early answer", "libcst loaded"]
