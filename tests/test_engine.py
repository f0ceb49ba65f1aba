"""apply / status / revert on the fixture: idempotence, dry run, byte-exact revert, drift, residue."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import tree_hashes

from latentsync_mps.cli.exits import exit_code_of
from latentsync_mps.port import transaction
from latentsync_mps.port.detection import detect
from latentsync_mps.port.errors import BadInput
from latentsync_mps.port.manifest import State
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.scanning import scan


def apply(tree, pack, **kwargs):
    plan = make_plan(tree, pack, **kwargs)
    transaction.commit(plan)
    return plan


def test_detects_profile_and_release(fixture_tree, pack):
    profile, release = detect(fixture_tree, pack)
    assert profile.name == "latentsync"
    assert release is not None and release.name == "1.6"


def test_apply_ports_every_call_site_of_the_fixture(fixture_tree, pack):
    plan = apply(fixture_tree, pack)
    assert plan.drift == []
    assert plan.residue == []
    assert plan.problems == []
    inference = (fixture_tree / "scripts/inference.py").read_text()
    assert '"cuda"' not in inference and "_lsync_port.fp16_supported()" in inference
    resnet = (fixture_tree / "latentsync/models/resnet.py").read_text()
    assert resnet.count("_lsync_port.interpolate(hidden_states") == 2
    detector = (fixture_tree / "latentsync/utils/face_detector.py").read_text()
    assert "CUDAExecutionProvider" not in detector.split("def cuda_to_int")[0]
    requirements = (fixture_tree / "requirements.txt").read_text()
    assert "onnxruntime-gpu" not in requirements and "whl/cu121" not in requirements
    assert (fixture_tree / "latentsync/_lsync_port.py").exists()
    # Everything it wrote still compiles.
    for path in fixture_tree.rglob("*.py"):
        compile(path.read_bytes(), str(path), "exec")


def test_untouched_files_stay_byte_identical(fixture_tree, pack):
    before = tree_hashes(fixture_tree)
    plan = apply(fixture_tree, pack)
    after = tree_hashes(fixture_tree)
    changed = {f.path for f in plan.files}
    for rel, digest in before.items():
        if rel not in changed:
            assert after[rel] == digest, rel


def test_second_apply_is_a_no_op(fixture_tree, pack):
    first = apply(fixture_tree, pack)
    once = tree_hashes(fixture_tree)
    # Without the manifest's cached report, so that the rules really run again (from the backups).
    manifest_path = fixture_tree / ".lsync-port/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["result"] = None
    manifest_path.write_text(json.dumps(manifest))
    again = make_plan(fixture_tree, pack)
    assert not again.unchanged
    assert again.writes == []
    assert again.drift == [] and again.matches == first.matches
    transaction.commit(again)
    after = tree_hashes(fixture_tree)
    for state in (once, after):  # the manifest gets its report back; every other byte stays
        state.pop(".lsync-port/manifest.json")
    assert after == once


def test_dry_run_writes_nothing(fixture_tree, pack):
    before = tree_hashes(fixture_tree)
    plan = make_plan(fixture_tree, pack)
    assert plan.writes
    assert tree_hashes(fixture_tree) == before


def test_revert_restores_every_byte(fixture_tree, pack):
    # Modes are part of tree_hashes: an executable script and a read-only file among the rewritten.
    (fixture_tree / "scripts/inference.py").chmod(0o755)
    (fixture_tree / "latentsync/models/unet.py").chmod(0o444)
    pristine = tree_hashes(fixture_tree)
    apply(fixture_tree, pack)
    assert tree_hashes(fixture_tree) != pristine
    result = transaction.revert(fixture_tree)
    assert result.refused == []
    assert tree_hashes(fixture_tree) == pristine


def test_revert_brings_back_a_patched_file_the_user_deleted(fixture_tree, pack):
    pristine = tree_hashes(fixture_tree)
    apply(fixture_tree, pack)
    (fixture_tree / "scripts/inference.py").unlink()
    assert {f.path: f.state for f in transaction.status(fixture_tree).files}["scripts/inference.py"] == "missing"
    result = transaction.revert(fixture_tree)
    assert "scripts/inference.py" in result.restored and result.refused == []
    assert tree_hashes(fixture_tree) == pristine


def test_a_backup_whose_bytes_no_longer_match_the_manifest_is_refused_not_restored(fixture_tree, pack):
    original = (fixture_tree / "scripts/inference.py").read_bytes()
    apply(fixture_tree, pack)
    patched = (fixture_tree / "scripts/inference.py").read_bytes()
    backup = State(fixture_tree).backup_path("scripts/inference.py")
    assert backup.read_bytes() == original
    backup.write_bytes(original.replace(b"import", b"imprt", 1))  # damaged on disk, or edited
    result = transaction.revert(fixture_tree)
    (refused,) = result.refused
    assert refused.path == "scripts/inference.py" and "does not match its recorded hash" in refused.reason
    assert (fixture_tree / "scripts/inference.py").read_bytes() == patched, "a wrong backup must not be written"
    assert State(fixture_tree).exists(), "the manifest stays: the file is still to be reverted"


def test_manifest_records_hashes_rules_and_version(fixture_tree, pack):
    plan = apply(fixture_tree, pack)
    manifest = json.loads((fixture_tree / ".lsync-port/manifest.json").read_text())
    assert manifest["state"] == "applied"
    assert manifest["profile"] == "latentsync" and manifest["release"] == "1.6"
    assert set(manifest["rules"]) == {r.id for r in plan.rules}
    assert manifest["files"]["latentsync/_lsync_port.py"]["original"] is None
    entry = manifest["files"]["scripts/inference.py"]
    assert "fp16-gate" in entry["rules"]
    assert (fixture_tree / ".lsync-port/originals/scripts/inference.py").exists()


def test_status_tells_patched_modified_and_unpatched(fixture_tree, pack):
    assert transaction.status(fixture_tree).summary == "not patched"
    apply(fixture_tree, pack)
    assert transaction.status(fixture_tree).summary == "patched"
    (fixture_tree / "predict.py").write_text("# edited by hand\n")
    report = transaction.status(fixture_tree)
    assert report.summary.startswith("patched, with files changed by hand")
    assert {f.path: f.state for f in report.files}["predict.py"] == "modified"


def test_revert_keeps_hand_edits_unless_forced(fixture_tree, pack):
    pristine = tree_hashes(fixture_tree)
    apply(fixture_tree, pack)
    (fixture_tree / "predict.py").write_text("# edited by hand\n")
    result = transaction.revert(fixture_tree)
    assert [p.path for p in result.refused] == ["predict.py"]
    assert (fixture_tree / "predict.py").read_text() == "# edited by hand\n"
    assert State(fixture_tree).exists(), "the manifest must survive a partial revert"
    transaction.revert(fixture_tree, force=True)
    assert tree_hashes(fixture_tree) == pristine


def test_reapply_leaves_hand_edited_files_alone_and_revertible(fixture_tree, pack):
    pristine = tree_hashes(fixture_tree)
    apply(fixture_tree, pack)
    (fixture_tree / "predict.py").write_text("# edited by hand\n")
    plan = apply(fixture_tree, pack)
    assert [p.path for p in plan.problems] == ["predict.py"]
    assert (fixture_tree / "predict.py").read_text() == "# edited by hand\n"
    transaction.revert(fixture_tree, force=True)
    assert tree_hashes(fixture_tree) == pristine


def test_rules_option_limits_the_rewrite(fixture_tree, pack):
    plan = make_plan(fixture_tree, pack, rule_ids=["interpolate-float32"])
    assert set(plan.matches) == {"interpolate-float32"}
    assert {f.path for f in plan.files} == {
        "latentsync/models/resnet.py",
        "latentsync/pipelines/lipsync_pipeline.py",
        "latentsync/_lsync_port.py",
        "latentsync/_lsync_port_memory.json",  # the release's forecast figures, for the helper's dtype policy
    }
    with pytest.raises(BadInput) as error:
        make_plan(fixture_tree, pack, rule_ids=["no-such-rule"])
    assert exit_code_of(error.value) == 2


def test_drift_when_upstream_moves_under_a_rule(fixture_tree, pack):
    path = fixture_tree / "scripts/inference.py"
    path.write_text(
        path.read_text().replace(
            # is_initialized has no MPS counterpart (is_bf16_supported, used here before, now has one)
            "torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7",
            "torch.cuda.is_initialized()",
        )
    )
    plan = make_plan(fixture_tree, pack)
    assert [(d.rule_id, d.file) for d in plan.drift] == [("fp16-gate", "scripts/inference.py")]
    # ... and the new CUDA code is residue, with file and line.
    assert [(f.path, f.kind) for f in plan.residue] == [("scripts/inference.py", "torch-cuda")]
    # Its line is the line in the file as apply writes it (one import line added above).
    new_text = next(f.new for f in plan.files if f.path == "scripts/inference.py").decode().splitlines()
    assert "torch.cuda.is_initialized()" in new_text[plan.residue[0].line - 1]


def test_upgrade_from_another_tool_version_starts_from_the_originals(fixture_tree, pack, monkeypatch, tmp_path):
    pristine = tree_hashes(fixture_tree)
    # What a direct port of the pristine tree writes, on a separate copy.
    direct = tmp_path / "direct"
    shutil.copytree(fixture_tree, direct)
    apply(direct, pack)
    # An "older version" ported only the interpolate sites and wrote a different helper.
    old = make_plan(fixture_tree, pack, rule_ids=["interpolate-float32", "torch-cuda-calls"])
    monkeypatch.setattr(transaction, "__version__", "0.0.1")
    transaction.commit(old)
    monkeypatch.undo()
    assert json.loads((fixture_tree / ".lsync-port/manifest.json").read_text())["tool_version"] == "0.0.1"
    assert without_state(tree_hashes(fixture_tree)) != without_state(tree_hashes(direct))
    fresh = make_plan(fixture_tree, pack)
    transaction.commit(fresh)
    manifest = json.loads((fixture_tree / ".lsync-port/manifest.json").read_text())
    assert manifest["tool_version"] != "0.0.1"
    assert "scripts/inference.py" in manifest["files"]
    # The result equals a direct port of the pristine tree: the same bytes, the same report ...
    assert without_state(tree_hashes(fixture_tree)) == without_state(tree_hashes(direct))
    assert fresh.drift == []
    direct_files = json.loads((direct / ".lsync-port/manifest.json").read_text())["files"]
    assert {p: (e["original"], e["rules"]) for p, e in manifest["files"].items()} == {
        p: (e["original"], e["rules"]) for p, e in direct_files.items()
    }
    # ... and it still reverts to the pristine bytes, not to the older version's port.
    transaction.revert(fixture_tree)
    assert tree_hashes(fixture_tree) == pristine


def without_state(hashes: dict[str, str]) -> dict[str, str]:
    return {rel: digest for rel, digest in hashes.items() if not rel.startswith(".lsync-port/")}


def test_upgrade_restores_files_no_rule_changes_any_more(fixture_tree, pack):
    pristine = tree_hashes(fixture_tree)
    apply(fixture_tree, pack)
    plan = apply(fixture_tree, pack, rule_ids=["interpolate-float32"])
    assert "predict.py" in {f.path for f in plan.restores}
    assert tree_hashes(fixture_tree)["predict.py"] == pristine["predict.py"]
    transaction.revert(fixture_tree)
    assert tree_hashes(fixture_tree) == pristine


def test_dirty_git_tree_gets_a_warning(fixture_tree, pack):
    git = ["git", "-C", str(fixture_tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    assert make_plan(fixture_tree, pack).warnings == []
    (fixture_tree / "gradio_app.py").write_text((fixture_tree / "gradio_app.py").read_text() + "\n# mine\n")
    warnings = make_plan(fixture_tree, pack).warnings
    assert len(warnings) == 1 and "uncommitted" in warnings[0]


def test_scan_lists_cuda_constructs_by_kind(fixture_tree, pack):
    result = scan(fixture_tree, pack)
    in_scope = [f for f in result.findings if f.severity == "error" and result.in_scope(f)]
    kinds = {f.kind for f in in_scope}
    assert {"cuda-literal", "torch-cuda", "cuda-method", "onnx-cuda-provider", "no-mac-wheel", "cuda-index"} <= kinds
    apply(fixture_tree, pack)
    after = scan(fixture_tree, pack)
    assert [f for f in after.findings if f.severity == "error" and after.in_scope(f)] == []


def test_reapply_on_an_untouched_tree_skips_the_work_and_repeats_the_report(fixture_tree, pack):
    first = apply(fixture_tree, pack)
    again = make_plan(fixture_tree, pack)
    assert again.unchanged and again.writes == []
    assert again.matches == first.matches and again.drift == first.drift
    assert again.summary == {
        "files": len([f for f in first.files if f.pristine is not None]),
        "rewrites": len(first.changes),
    }
    # Any change to a candidate file (or to the rules) means real work again.
    script = fixture_tree / "gradio_app.py"
    script.write_text(script.read_text() + "\n# touched\n")
    assert not make_plan(fixture_tree, pack).unchanged
    script.write_text(script.read_text().replace("\n# touched\n", ""))
    assert make_plan(fixture_tree, pack).unchanged
    assert not make_plan(fixture_tree, pack, rule_ids=["interpolate-float32"]).unchanged
