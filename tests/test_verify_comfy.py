"""verify on the ComfyUI wrapper fixture: its nodes called as a workflow calls them, on cpu and
mps-sim; and the node contract's refusals (no nodes.py, an unknown node signature, bad outputs)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.payload.verify import comfy_contract as contract
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

runner = CliRunner()


@pytest.mark.parametrize("device", ["cpu", "mps-sim"])
def test_wrapper_nodes_run_as_comfyui_runs_them(tmp_path, pack, device):
    pytest.importorskip("diffusers", reason="verify needs the verify extra (torch, diffusers, decord)")
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    commit(make_plan(tree, pack))
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    result = runner.invoke(app, ["verify", str(tree), "--device", device, "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0, report["reason"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["node-adjust"]["status"] == checks["node"]["status"] == "pass"
    assert "float32 on cpu" in checks["node"]["detail"] and "AUDIO (1, 1, " in checks["node"]["detail"]
    assert checks["node"]["data"]["mouth_mean"] > 8 and checks["node"]["data"]["frames"] >= 8
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before  # the tree is not written to
    if device == "mps-sim":  # the node's own pipeline: its steps told by the scheduler class (docs/stalls.md)
        stalls = report["simulator"]["stalls"]
        assert stalls["denoising_loops"] == 4  # 2 chunks of the pipeline check, 2 of the node's run
        assert stalls["in_loop"] == {"readbacks": 0, "copies": 0, "copy_bytes": 0, "cpu_ops": 0}, stalls["sites"]


def test_node_results_left_on_mps_fail_the_contract(tmp_path, pack):
    """The port moves the node's results back to the CPU from MPS too; undo that one rewrite and
    ComfyUI would get an mps waveform: the contract check says so."""
    pytest.importorskip("diffusers", reason="verify needs the verify extra (torch, diffusers, decord)")
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    commit(make_plan(tree, pack))
    nodes = tree / "nodes.py"
    text = nodes.read_bytes()
    moved = b'resampled_audio["waveform"].device.type != "cpu"'
    assert moved in text  # the waveform went to the device with the frames
    nodes.write_bytes(text.replace(moved, b'resampled_audio["waveform"].device.type == "cuda"'))
    result = runner.invoke(app, ["verify", str(tree), "--device", "mps-sim", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 11
    failed = next(c for c in report["checks"] if c["status"] == "fail")
    assert failed["name"] == "node"
    assert "AUDIO waveform is on mps:0, not the CPU" in failed["detail"]


def write_package(folder, nodes_source: str | None):
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("from .nodes import NODE_CLASS_MAPPINGS\n")
    if nodes_source is not None:
        (folder / "nodes.py").write_text(nodes_source)
    return folder


def test_package_without_nodes_py_is_refused_naming_the_file(tmp_path):
    package = write_package(tmp_path / "custom_nodes" / "Wrapper", None)
    with pytest.raises(contract.ContractError, match=r"Wrapper/nodes\.py: no nodes\.py"):
        contract.load_node_package(package, tmp_path)


NODES = """
import folder_paths

class LatentSyncNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "audio": ("AUDIO",), "seed": ("INT", {})}}
    RETURN_TYPES = ("IMAGE", "AUDIO")
    FUNCTION = "run"
    def run(self, images, audio, seed):
        return (images, audio)

NODE_CLASS_MAPPINGS = {"LatentSyncNode": LatentSyncNode}
TEMP = folder_paths.get_temp_directory()
"""


def test_unknown_node_signature_is_refused_with_what_was_expected(tmp_path):
    package = write_package(tmp_path / "custom_nodes" / "Wrapper", NODES)
    try:
        module = contract.load_node_package(package, tmp_path / "ComfyUI")
        assert sys.modules["Wrapper.nodes"].TEMP == str(tmp_path / "ComfyUI" / "temp")  # folder_paths came first
        with pytest.raises(contract.ContractError) as error:
            contract.node_class(
                module, "LatentSyncNode", "inference", {"images": "IMAGE"}, ("IMAGE", "AUDIO"), package / "nodes.py"
            )
        message = str(error.value)
        assert message.startswith(f"{package / 'nodes.py'}: unknown node signature, FUNCTION is 'run'")
        assert "expected LatentSyncNode: FUNCTION = 'inference'" in message
        with pytest.raises(contract.ContractError, match="has no 'VideoLengthAdjuster'"):
            contract.node_class(module, "VideoLengthAdjuster", "adjust", {}, ("IMAGE", "AUDIO"), package / "nodes.py")
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in ("Wrapper", "folder_paths")]:
            del sys.modules[name]


def test_outputs_are_judged_by_comfyuis_types():
    torch = pytest.importorskip("torch")
    good = torch.rand(4, 8, 8, 3)
    assert contract.image_problems(good) == []
    assert "not torch.float32" in contract.image_problems(good.half())[0]
    assert "not [frames, height, width, 3]" in contract.image_problems(good.permute(0, 3, 1, 2))[0]
    assert "not 0..1" in contract.image_problems(good * 255)[0]
    audio = {"waveform": torch.zeros(1, 1, 160), "sample_rate": 16000}
    assert contract.audio_problems(audio) == []
    assert "not a tensor [1, channels, samples]" in contract.audio_problems({**audio, "waveform": torch.zeros(160)})[0]
    assert "not an int" in contract.audio_problems({**audio, "sample_rate": 16000.0})[0]

    class Node:
        RETURN_TYPES = ("IMAGE", "AUDIO")
        FUNCTION = "go"

        def go(self):
            return [good, audio]

    with pytest.raises(contract.ContractError, match="returned list, not a tuple of 2"):
        contract.run_node(Node)
