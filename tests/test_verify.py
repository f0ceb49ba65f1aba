"""`lsync-port verify` on the fixture: passes when ported, fails for the right reason otherwise.

Each run executes the fixture's own code in a child process with tiny synthetic weights (a few
seconds each). The broken variants start from the ported fixture and break one thing each.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

pytest.importorskip("torch", reason="verify needs the verify extra (torch, diffusers, decord)")
pytest.importorskip("diffusers", reason="verify needs the verify extra (torch, diffusers, decord)")

runner = CliRunner()


def verify(tree, *args: str):
    result = runner.invoke(app, ["verify", str(tree), "--json", *args])
    return result.exit_code, json.loads(result.output)


@pytest.fixture
def ported(fixture_tree, pack):
    commit(make_plan(fixture_tree, pack))
    return fixture_tree


def edit(tree, rel, old, new):
    path = tree / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


def failed(report) -> dict:
    return next(c for c in report["checks"] if c["status"] == "fail")


def test_ported_fixture_passes_on_cpu(ported):
    code, report = verify(ported, "--device", "cpu")
    assert code == 0, report["reason"]
    assert report["passed"] and report["device"] == "cpu"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "device": "pass",
        "import": "pass",
        "weights": "pass",
        "decode": "pass",
        "audio": "pass",
        "unet": "pass",
        "pipeline": "pass",
        "output": "pass",
        "preview": "pass",
        "parity": "skip",
    }
    output = next(c for c in report["checks"] if c["name"] == "output")
    assert output["data"]["frames"] == 8 and output["data"]["fps"] == 25


def test_unported_fixture_fails_on_cpu_where_cuda_is_hard_coded(fixture_tree):
    code, report = verify(fixture_tree, "--device", "cpu")
    assert code == 11 and not report["passed"]
    check = failed(report)
    assert check["name"] == "pipeline"
    assert "Torch not compiled with CUDA enabled" in check["detail"]
    assert any("latentsync/" in frame for frame in check["data"]["traceback"])


def test_mps_on_a_machine_without_it_says_so(ported):
    code, report = verify(ported, "--device", "mps")
    assert code == 11
    assert failed(report)["name"] == "device"
    assert "no MPS device here" in report["reason"] and "--device cpu" in report["reason"]
    assert "--device mps-sim" in report["reason"], "a machine without MPS can still check the MPS path"


# One defect each, put into a ported fixture: (file, old, new, the check that must fail, words of its reason).
DEFECTS = {
    "leftover-cuda-literal": (
        "latentsync/pipelines/lipsync_pipeline.py",
        "device=_lsync_port.face_device(device)",
        'device="cuda"',
        "pipeline",
        "CUDA",
    ),
    "black-output": (
        "latentsync/pipelines/lipsync_pipeline.py",
        "        return decoded * masks + pixel_values * (1 - masks)",
        "        return (decoded * masks + pixel_values * (1 - masks)) * 0 - 1",
        "output",
        "mouth region is black",
    ),
    "nan": (
        "latentsync/models/unet.py",
        "return UNet3DConditionOutput(sample=self.conv_out(F.silu(self.norm_out(x))))",
        "return UNet3DConditionOutput(sample=self.conv_out(F.silu(self.norm_out(x))) * float('nan'))",
        "unet",
        "NaN",
    ),
    "decode-failure": (
        "latentsync/utils/util.py",
        "    reader = VideoReader(video_path)",
        "    reader = VideoReader(video_path + '.missing')",
        "decode",
        "input.mp4.missing",  # the tree's own error, naming the file it could not open
    ),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_broken_port_fails_for_the_right_reason(ported, defect):
    path, old, new, check, words = DEFECTS[defect]
    assert words, "a reason's words must say something"
    edit(ported, path, old, new)
    code, report = verify(ported, "--device", "cpu")
    assert code == 11
    assert failed(report)["name"] == check and words in report["reason"]


def test_hang_hits_the_timeout(ported):
    edit(
        ported,
        "latentsync/whisper/audio2feature.py",
        "    def audio2feat(self, audio_path):",
        "    def audio2feat(self, audio_path):\n        import time\n        time.sleep(600)",
    )
    code, report = verify(ported, "--device", "cpu", "--timeout", "15")
    assert code == 11
    assert report["reason"] == "timed out after 15 s during: audio features"


def test_crashing_child_is_reported_with_the_running_check(ported):
    edit(
        ported,
        "latentsync/models/unet.py",
        "        timesteps = timestep\n",
        "        import os, signal\n        os.kill(os.getpid(), signal.SIGKILL)\n        timesteps = timestep\n",
    )
    code, report = verify(ported, "--device", "cpu")
    assert code == 11
    assert report["reason"].startswith("the child process died (killed by signal 9")
    assert report["reason"].endswith("during: UNet forward")


def test_bad_options_are_usage_errors(ported):
    assert runner.invoke(app, ["verify", str(ported), "--device", "tpu"]).exit_code == 2
    assert runner.invoke(app, ["verify", str(ported), "--python", "/no/such/python"]).exit_code == 2


def test_real_weights_are_refused_clearly_without_checkpoints(ported):
    code, report = verify(ported, "--device", "cpu", "--weights", "real")
    assert code == 11
    assert failed(report)["name"] == "weights"
    assert "checkpoints/latentsync_unet.pt" in report["reason"] and "--weights synthetic" in report["reason"]


MAKE_CHECKPOINTS = r"""
import sys, torch
from diffusers import AutoencoderKL
from omegaconf import OmegaConf
sys.path.insert(0, ".")
from latentsync.models.unet import UNet3DConditionModel
from latentsync.whisper.whisper.model import ModelDimensions, Whisper
config = OmegaConf.to_container(OmegaConf.load("configs/unet/stage2.yaml"))
unet, _ = UNet3DConditionModel.from_pretrained(config["model"], "", device="cpu")
torch.save({"state_dict": unet.state_dict()}, "checkpoints/latentsync_unet.pt")
dims = {"n_audio_state": 384}
whisper = Whisper(ModelDimensions(**dims)).state_dict()
torch.save({"dims": dims, "model_state_dict": whisper}, "checkpoints/whisper/tiny.pt")
AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              block_out_channels=(32,) * 4, layers_per_block=1, norm_num_groups=8).save_pretrained(
    "checkpoints/vae", safe_serialization=False)
"""


def test_real_weights_use_the_trees_checkpoints_and_real_face_detection(ported):
    import subprocess
    import sys

    (ported / "checkpoints" / "whisper").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", MAKE_CHECKPOINTS], cwd=ported, check=True, capture_output=True)
    code, report = verify(ported, "--device", "cpu")  # auto: checkpoints/ present -> real
    assert report["weights"] == "real"
    weights = next(c for c in report["checks"] if c["name"] == "weights")
    assert weights["status"] == "pass" and "latentsync_unet.pt" in weights["detail"]
    assert next(c for c in report["checks"] if c["name"] == "unet")["status"] == "pass"
    # No stand-in: the fixture's FaceDetector needs InsightFace, which this environment lacks.
    assert code == 11 and failed(report)["name"] == "pipeline" and "insightface" in report["reason"]
