"""Memory between chunks on MPS: the peak of live device bytes does not grow with the video's length.

The pipeline denoises 16 frames at a time and keeps every decoded chunk until the whole video is
restored. Ported before `release_chunk_memory` moved the chunks to host memory and `join_chunks`
kept them there, the kept chunks and their concatenation stayed on the device, so the peak grew
with the video. The ported fixture runs under the MPS simulator (which counts live device bytes)
for a video of two chunks and one of four, with the helpers and with them undone, in one child
process with verify's synthetic weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

torch = pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")
pytest.importorskip("diffusers", reason="the smoke pipeline needs diffusers (verify extra)")

from latentsync_mps.features.verify import runner  # noqa: E402
from latentsync_mps.payload.verify import harness  # noqa: E402
from latentsync_mps.port.planning import make_plan  # noqa: E402
from latentsync_mps.port.transaction import commit  # noqa: E402

# Chunks of 1 frame (the fixture's config says 4) keep the runs cheap; the videos have 2 and 4
# chunks. Two chunks at least: while a chunk is denoised, the previous chunk's result is still
# referenced by the loop's variable, so one chunk and two differ by a constant, not by length.
CHUNK_FRAMES = 1
LENGTHS = [2 * CHUNK_FRAMES, 4 * CHUNK_FRAMES]
RESOLUTION = 64  # the fixture's configs/unet/stage2.yaml
CHUNK_BYTES = CHUNK_FRAMES * 3 * RESOLUTION * RESOLUTION * 4  # one decoded chunk in float32
# The longer video may peak higher by less than a quarter of one decoded chunk: what the pipeline
# keeps for the whole video on the device besides (the latents: 4 channels at 1/8 of the
# resolution, 512 bytes a frame) is that small. Kept chunks add two whole chunks or more.
TOLERANCE_BYTES = CHUNK_BYTES // 4

DRIVER = r"""
import importlib, importlib.util, json, os, sys
from pathlib import Path

module_spec = importlib.util.spec_from_file_location("lsync_port_harness", sys.argv[1])
harness = importlib.util.module_from_spec(module_spec)
sys.modules[module_spec.name] = harness
module_spec.loader.exec_module(harness)
checks, check_run, pipeline = harness.checks, harness.check_run, harness.checks.pipeline
spec = harness.protocol.Spec.read(sys.argv[2])
check_run.EVENTS = Path(spec.events)
os.chdir(spec.tree)
sys.path.insert(0, spec.tree)
state = harness.State(simulator=harness.install_simulator(spec))
os.environ["LATENTSYNC_DEVICE"] = "mps"
harness.ffmpeg_on_path(Path(spec.work))
state.config, state.resolution, state.whole_chunks = harness.release.read_config(spec)
state.config["data"]["num_frames"] = CHUNK_FRAMES
LENGTHS = LENGTHS_JSON
simulator = state.simulator


def check(name, function):
    assert check_run.run_check(name, function, spec, state), Path(spec.events).read_text()[-3000:]


for name in ("device", "imports", "weights", "decode", "audio", "unet"):
    check(name, getattr(checks, "check_" + name))
state.unet_output = state.unet_inputs = None
helper = importlib.import_module("latentsync._lsync_port")
runs = []
# The short video with the helpers, then the long one with and without them (the short one
# without them is not needed: the long one must exceed the short one by two chunks).
for frames, undone in ((LENGTHS[0], False), (LENGTHS[1], False), (LENGTHS[1], True)):
    if undone:  # the port before the two rules: chunks kept on the device, joined there
        helper.release_chunk_memory = lambda result: result
        helper.join_chunks = state.torch.cat
    spec.frames = frames
    check("decode", checks.check_decode)  # the clip and its audio (the pipeline encodes the audio itself)
    before = simulator.live_bytes
    simulator.peak_bytes = before
    out = Path(spec.work) / f"output-{frames}-{undone}.mp4"
    pipeline.run_pipeline(spec, state, "mps", state.dtype, out)
    errors = [f for f in simulator.report() if f["level"] == "error"]
    runs.append({"undone": undone, "frames": len(checks.inputs.read_video_frames(out)[0]),
                 "peak": simulator.peak_bytes - before, "errors": len(errors)})
print(json.dumps(runs))
""".replace("CHUNK_FRAMES", str(CHUNK_FRAMES)).replace("LENGTHS_JSON", json.dumps(LENGTHS))


def pipeline_peaks(tree: Path, work: Path) -> list[dict]:
    """Run the tree's pipeline on the simulated MPS device once per video length (frames), in one
    child process; return each run's peak of live device bytes above what was live before it."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "driver.py").write_text(DRIVER)
    spec = {
        "tree": str(tree),
        "device": "mps",
        "simulate": "mps",
        "weights": "synthetic",
        "steps": 1,
        "frames": LENGTHS[0],
        "seed": 1247,
        "config": runner.find_config(tree),
        "modules": runner.MODULES,
        "runtime_module": "latentsync._lsync_port",
        "work": str(work),
        "events": str(work / "events.jsonl"),
        "cache": str(runner._cache_dir()),  # verify's synthetic weights, shared with its tests
    }
    (work / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, str(work / "driver.py"), harness.__file__, str(work / "spec.json")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=900,  # about 50 s of CPU; a loaded machine stretches it
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "LATENTSYNC_DTYPE": "float32"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pack) -> dict[str, dict]:
    """The ported fixture's peaks for both lengths, and for the long one again with the two
    helpers undone in the same process (release_chunk_memory keeps the chunk on the device,
    join_chunks is torch.cat: the port before this change)."""
    tree = tmp_path_factory.mktemp("chunks") / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    commit(make_plan(tree, pack))
    pipeline = (tree / "latentsync/pipelines/lipsync_pipeline.py").read_text()
    assert "_lsync_port.release_chunk_memory(" in pipeline and "_lsync_port.join_chunks(" in pipeline
    short, long, undone = pipeline_peaks(tree, tmp_path_factory.mktemp("work"))
    assert [short["frames"], long["frames"], undone["frames"]] == [*LENGTHS, LENGTHS[1]]
    assert short["errors"] == long["errors"] == undone["errors"] == 0
    return {"short": short, "long": long, "undone": undone}


def test_the_peak_does_not_grow_with_the_video(runs):
    growth = runs["long"]["peak"] - runs["short"]["peak"]
    assert growth < TOLERANCE_BYTES, (runs, TOLERANCE_BYTES)


def test_chunks_kept_on_the_device_make_the_peak_grow(runs):
    """The measurement can fail: with the chunks kept on the device, two more chunks of video
    raise the peak by two chunks and more (kept, then joined)."""
    growth = runs["undone"]["peak"] - runs["short"]["peak"]
    assert growth >= 2 * CHUNK_BYTES, (runs, CHUNK_BYTES)
