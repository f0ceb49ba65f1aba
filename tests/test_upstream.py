"""Opt-in: the same checks as the fixture tests, on real upstream checkouts.

    LSYNC_UPSTREAM=/path/LatentSync[:/path/other-release...] pytest tests/test_upstream.py
    LSYNC_COMFY=/path/ComfyUI-LatentSyncWrapper pytest tests/test_upstream.py

The checkouts are copied first: the user's clone is never modified. Without the variables every
test here is skipped; the fixture tests cover the same properties on trees written from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tree_hashes
from typer.testing import CliRunner

from latentsync_mps.cli import app


def _trees(variable: str) -> list[Path]:
    return [Path(p) for p in os.environ.get(variable, "").split(os.pathsep) if p]


UPSTREAMS = [pytest.param((p, "latentsync"), id=f"LSYNC_UPSTREAM:{p.name}") for p in _trees("LSYNC_UPSTREAM")]
UPSTREAMS += [pytest.param((p, "comfyui-latentsyncwrapper"), id=f"LSYNC_COMFY:{p.name}") for p in _trees("LSYNC_COMFY")]

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not UPSTREAMS, reason="set LSYNC_UPSTREAM / LSYNC_COMFY to real checkouts to run these"),
]
runner = CliRunner()


@pytest.fixture
def upstream_copy(request, tmp_path):
    source, profile = request.param
    if not source.is_dir():
        pytest.fail(f"{source} is not a directory")
    target = tmp_path / source.name
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    return target, profile


@pytest.mark.parametrize("upstream_copy", UPSTREAMS, indirect=True)
def test_real_upstream_apply_compile_reapply_revert(upstream_copy):
    upstream_copy, profile = upstream_copy
    pristine = tree_hashes(upstream_copy)
    result = runner.invoke(app, ["apply", str(upstream_copy), "--json", "--strict"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["profile"] == profile
    assert report["release"] is not None, "the release was not recognised"
    assert report["drift"] == [], report["drift"]
    assert report["residue"] == [], report["residue"]
    changed = {f["path"] for f in report["files"]}

    for path in upstream_copy.rglob("*.py"):
        compile(path.read_bytes(), str(path), "exec")
    # scan, run separately over the ported tree, finds nothing left on the inference path.
    scanned = runner.invoke(app, ["scan", str(upstream_copy), "--json", "--strict"])
    assert scanned.exit_code == 0, scanned.output
    assert json.loads(scanned.output)["counts"] == {}
    patched = tree_hashes(upstream_copy)
    for rel, digest in pristine.items():
        if rel not in changed:
            assert patched[rel] == digest, f"{rel} changed without a rule"

    again = json.loads(runner.invoke(app, ["apply", str(upstream_copy), "--json"]).output)
    assert again["written"] is False
    assert tree_hashes(upstream_copy) == patched

    assert runner.invoke(app, ["revert", str(upstream_copy)]).exit_code == 0
    assert tree_hashes(upstream_copy) == pristine


# LSYNC_UPSTREAM_PYTHON: an interpreter with the upstream's dependency stack
# (scripts/upstream-stack.txt), and RELEASE=PATH entries for releases that need their own
# (1.0: scripts/upstream-stack-1.0.txt), separated like PATH: "1.0=/venv10/bin/python:/venv/bin/python".
UPSTREAM_PYTHONS = [p for p in os.environ.get("LSYNC_UPSTREAM_PYTHON", "").split(os.pathsep) if p]


def python_for(tree: Path) -> str | None:
    from latentsync_mps.pack.paths import patches_dir
    from latentsync_mps.port.detection import detect
    from latentsync_mps.port.rulepack import load

    _, release = detect(tree, load(patches_dir()))
    chosen = None
    for entry in UPSTREAM_PYTHONS:
        name, sep, path = entry.partition("=")
        if sep and release is not None and name == release.name:
            return path
        if not sep:
            chosen = entry
    return chosen


@pytest.mark.parametrize("device", ["cpu", "mps-sim"])
@pytest.mark.parametrize("upstream_copy", UPSTREAMS, indirect=True)
def test_real_upstream_verify_with_synthetic_weights(upstream_copy, device):
    """Every release, its own interpreter: stand-in landmarks for InsightFace (1.6 and later) or
    face_alignment and mediapipe (1.0, 1.5)."""
    upstream_copy, _ = upstream_copy
    python = python_for(upstream_copy)
    if not python:
        pytest.skip("set LSYNC_UPSTREAM_PYTHON to an interpreter with the upstream's dependencies")
    assert runner.invoke(app, ["apply", str(upstream_copy)]).exit_code == 0
    result = runner.invoke(
        app,
        ["verify", str(upstream_copy), "--device", device, "--python", python, "--json", "--timeout", "900"],
    )
    report = json.loads(result.output)
    assert result.exit_code == 0, report["reason"]
    assert report["passed"] and report["weights"] == "synthetic"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["pipeline"] == statuses["output"] == "pass"


@pytest.mark.parametrize("upstream_copy", UPSTREAMS, indirect=True)
def test_real_upstream_runs_on_its_own_torch_and_decides_when_called(upstream_copy):
    """Issue 11 part 5 and issue 12 on a real checkout (the fixture tests run the same rewrites):
    the ops the pinned Mac torch lacks go through the helper, and dtype and device defaults are
    decided when called."""
    upstream_copy, _ = upstream_copy
    affine = upstream_copy / "latentsync/utils/affine_transform.py"
    # 1.6 defaults AlignRestore to float16; the wrapper's copy (556b673) to float32, which needs no decision.
    float16_default = "dtype=torch.float16" in affine.read_text()
    assert runner.invoke(app, ["apply", str(upstream_copy)]).exit_code == 0
    pipeline = (upstream_copy / "latentsync/pipelines/lipsync_pipeline.py").read_text()
    assert "weight_dtype = _lsync_port.dtype()" in pipeline and "= torch.float16" not in pipeline
    assert "ImageProcessor(" in pipeline and "device=_lsync_port.face_device(device)" in pipeline
    assert "synced_video_frames.append(_lsync_port.release_chunk_memory(decoded_latents))" in pipeline
    assert "_lsync_port.resize(" in pipeline and "torchvision.transforms.functional.resize(" not in pipeline
    resnet = (upstream_copy / "latentsync/models/resnet.py").read_text()
    assert resnet.count("_lsync_port.interpolate(") == 2 and "F.interpolate(" not in resnet
    inference = (upstream_copy / "scripts/inference.py").read_text()
    assert "torch.float16 if is_fp16_supported else torch.float32" not in inference
    if "kornia" in affine.read_text():  # 1.6 and later: AlignRestore on the device
        text = affine.read_text()
        assert "_lsync_port.det(" in text and "torch.det(" not in text
        assert "dtype=torch.float16" not in text
        assert ("dtype = _lsync_port.restore_dtype(device)" in text) == float16_default
        detector = (upstream_copy / "latentsync/utils/face_detector.py").read_text()
        assert "def __init__(self, device=None):" in detector
