"""Opt-in (LSYNC_UPSTREAM, as test_upstream.py): issue 12 items 6, 8 and 2 on real checkouts.
Decoded chunks leave the device and stay on the host when joined; setup_env.sh and inference.sh
are ported for a Mac; the release's forecast figures are written beside the helper (1.5 and
later). The fixture tests (test_memory_between_chunks.py, test_profiles.py,
test_runtime_helper.py) check the same on trees written from scratch."""

from __future__ import annotations

import json
import shutil

import pytest
from test_upstream import UPSTREAMS, pytestmark, runner  # noqa: F401

from latentsync_mps.cli import app

LATENTSYNC = [p for p in UPSTREAMS if p.values[0][1] == "latentsync"]


@pytest.fixture
def upstream_copy(request, tmp_path):
    source, _ = request.param
    target = tmp_path / source.name
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    return target


@pytest.mark.parametrize("upstream_copy", LATENTSYNC, indirect=True)
def test_real_upstream_keeps_chunks_on_the_host_and_ports_its_scripts(upstream_copy):
    result = runner.invoke(app, ["apply", str(upstream_copy), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["drift"] == [] and report["residue"] == []
    pipeline = (upstream_copy / "latentsync/pipelines/lipsync_pipeline.py").read_text()
    assert "_lsync_port.release_chunk_memory(decoded_latents)" in pipeline
    assert "_lsync_port.join_chunks(synced_video_frames)" in pipeline
    assert "torch.cat(synced_video_frames)" not in pipeline
    setup = (upstream_copy / "setup_env.sh").read_text()
    assert 'if [ "$(uname)" != "Darwin" ]; then sudo apt -y install libgl1; fi' in setup
    assert 'conda install -y -c conda-forge ffmpeg || { [ "$(uname)" = "Darwin" ] && brew install ffmpeg; }' in setup
    assert "# On a Mac (lsync-port): requirements.txt is ported for macOS" in setup
    inference = (upstream_copy / "inference.sh").read_text()
    assert inference.index("# On a Mac (lsync-port): runs on mps") < inference.index("python -m scripts.inference")
    figures = upstream_copy / "latentsync/_lsync_port_memory.json"
    assert figures.exists() is (report["release"] != "1.0")
    if figures.exists():
        assert json.loads(figures.read_text())["release"] == report["release"]
    assert runner.invoke(app, ["revert", str(upstream_copy)]).exit_code == 0
    assert not figures.exists()
