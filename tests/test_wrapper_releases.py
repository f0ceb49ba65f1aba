"""The two ComfyUI-LatentSyncWrapper commits in patches/upstreams.toml: 360d528 (vendors 1.6, has
stage2_512.yaml) and 556b673 (its last 1.5-based commit: stage2.yaml only, and an AlignRestore that
already defaults to float32, so align-restore-dtype has nothing to port there).

The wrapper fixture is 360d528's shape; the 556b673 shape is derived from it here. The opt-in
tests in test_upstream.py apply the real commits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES

from latentsync_mps.pack.errors import RuleFileError
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.detection import detect
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.rulepack import load

AFFINE = "latentsync/utils/affine_transform.py"
# What detection looks at (empty stand-ins will do), and the one file the waived rule is about:
# the whole fixture is ported in tests/test_profiles.py; this keeps these tests fast.
MARKERS = [
    "nodes.py",
    "scripts/inference.py",
    "latentsync/pipelines/lipsync_pipeline.py",
    "latentsync/utils/face_detector.py",
]
RULES = ["align-restore-dtype"]


def wrapper_tree(tmp_path: Path, *, config_512: bool, restore_dtype: str) -> Path:
    tree = tmp_path / "wrapper"
    for marker in MARKERS:
        (tree / marker).parent.mkdir(parents=True, exist_ok=True)
        (tree / marker).touch()
    config = tree / "configs" / "unet" / ("stage2_512.yaml" if config_512 else "stage2.yaml")
    config.parent.mkdir(parents=True)
    config.touch()
    source = (FIXTURES / "comfyui-latentsyncwrapper" / AFFINE).read_text()
    assert "dtype=torch.float16)" in source
    (tree / AFFINE).write_text(source.replace("dtype=torch.float16)", f"dtype=torch.{restore_dtype})", 1))
    return tree


def test_the_1_5_based_commit_is_recognised_and_ports_with_no_drift(tmp_path, pack):
    tree = wrapper_tree(tmp_path, config_512=False, restore_dtype="float32")
    profile, release = detect(tree, pack)
    assert (profile.name, release.name) == ("comfyui-latentsyncwrapper", "wrapper-556b673")
    plan = make_plan(tree, pack, rule_ids=RULES)
    assert plan.drift == [], [(d.rule_id, d.file, d.found) for d in plan.drift]
    assert plan.problems == []
    assert plan.matches["align-restore-dtype"] == 0


def test_the_1_6_commit_keeps_its_expectation(tmp_path, pack):
    """The waiver belongs to 556b673 only: a 360d528-shaped tree without the float16 default drifts."""
    tree = wrapper_tree(tmp_path, config_512=True, restore_dtype="float32")
    _, release = detect(tree, pack)
    assert release.name == "wrapper-360d528"
    drift = [(d.rule_id, d.file) for d in make_plan(tree, pack, rule_ids=RULES).drift]
    assert drift == [("align-restore-dtype", AFFINE)]


def test_nothing_to_port_names_a_known_rule(tmp_path):
    patches = tmp_path / "patches"
    shutil.copytree(patches_dir(), patches)
    upstreams = patches / "upstreams.toml"
    upstreams.write_text(upstreams.read_text().replace('"align-restore-dtype" =', '"no-such-rule" =', 1))
    with pytest.raises(RuleFileError, match="nothing_to_port.*no-such-rule"):
        load(patches)
