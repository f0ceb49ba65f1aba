"""Work counted by forecast (issue 22): FLOPs and bytes of small known modules on meta tensors,
the roofline per chip, the chip table and its bad input, and the figures on the fixture's forecast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack import apple_chips as estimate

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def work():
    pytest.importorskip("torch", reason="forecast needs the verify extra (torch)")
    from latentsync_mps.payload.forecast import work as module

    return module


def _count(work, function):
    import torch

    meter = work.WorkMeter()
    with torch.no_grad(), meter, meter.during("phase"):
        function()
    return meter.phases["phase"]


def test_a_linear_layer_is_2mnk_flops_and_reads_its_operands_once(work):
    import torch

    layer = torch.nn.Linear(64, 32, device="meta")
    x = torch.empty(8, 64, device="meta")
    counted = _count(work, lambda: layer(x))
    assert counted["flops"] == 2 * 8 * 64 * 32
    # addmm reads bias (32), input (8x64) and the weight (32x64), writes 8x32; the transpose is a view.
    assert counted["bytes"] == 4 * (32 + 8 * 64 + 32 * 64 + 8 * 32)
    assert counted["attention_flops"] == 0


def test_a_convolution_is_2_macs_per_output_element(work):
    import torch

    conv = torch.nn.Conv2d(3, 8, 3, device="meta", dtype=torch.float16)
    x = torch.empty(1, 3, 16, 16, device="meta", dtype=torch.float16)
    counted = _count(work, lambda: conv(x))
    assert counted["flops"] == 2 * (8 * 14 * 14) * (3 * 3 * 3)
    assert counted["bytes"] == 2 * (3 * 16 * 16 + 8 * 3 * 3 * 3 + 8 + 8 * 14 * 14)


def test_mps_attention_counts_as_the_fused_kernels_and_elementwise_ops_as_memory(work):
    import torch

    q = torch.empty(1, 2, 16, 8, device="meta")
    counted = _count(work, lambda: torch.ops.aten._scaled_dot_product_attention_math_for_mps(q, q, q))
    assert counted["flops"] == counted["attention_flops"] == 2 * 2 * (1 * 2 * 16 * 16 * 8)
    relu = _count(work, lambda: torch.relu(q))
    assert relu["flops"] == 0 and relu["bytes"] == 2 * 4 * q.numel()
    assert relu["bins"] == {work.MEMORY_BIN: [0, 2 * 4 * q.numel()]}


def _chip(tflops: float, gbs: float) -> estimate.Chip:
    return estimate.Chip("Apple Test", 1, tflops, gbs, "test", "test")


def test_the_roofline_takes_the_slower_of_compute_and_memory_per_bin():
    chip = _chip(1.0, 100.0)  # 1e12 FLOP/s, 1e11 B/s: the ridge at 10 FLOPs a byte
    phase = {"bins": {"memory": [0, 10**11], "12": [8 * 10**12, 10**10]}}
    # 1 s for the memory-bound bin, 8 s of compute for the other (its bytes alone would take 0.1 s).
    assert estimate.roofline_seconds(phase, chip, "float16") == pytest.approx(9.0)
    work_rows = {"vae encode": phase, "denoise step 1": {"bins": {}}, "denoise step 2": phase, "vae decode": {}}
    gpu = estimate.gpu_seconds(work_rows, chip, "float16", steps=20)
    assert gpu["seconds"] == pytest.approx(9.0 + 20 * 9.0)
    cpu = {"parts": {"decode": {"per_frame_s": 0.5}, "warp": {"per_frame_s": 9.0, "counted": False}}}
    chunk = estimate.chunk_estimate(work_rows, chip, "float16", 16, cpu)
    assert chunk["cpu_seconds"] == pytest.approx(8.0) and chunk["seconds"] == pytest.approx(189.0 + 8.0)


def test_every_chip_in_the_table_has_its_figures_and_their_sources():
    chips = estimate.load_chips()
    names = {chip.name for chip in chips}
    for generation in ("M1", "M2", "M3", "M4"):
        assert {f"Apple {generation}", f"Apple {generation} Pro", f"Apple {generation} Max"} <= names
    for chip in chips:
        assert chip.fp32_tflops > 0 and chip.bandwidth_gbs > 0
        assert "Apple" in chip.bandwidth_source, chip  # Apple's published bandwidth
        # The key into [sources] resolved: Apple's figure, or a derivation that names its clock's source.
        assert "Apple" in chip.fp32_source or "derived" in chip.fp32_source, chip
    assert estimate.find_chip("m3 pro", chips).name == "Apple M3 Pro"
    assert estimate.find_chip("Apple M4 Max", chips).bandwidth_gbs == 546


def test_an_unknown_chip_is_said_and_the_known_ones_listed(tmp_path):
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    result = runner.invoke(app, ["forecast", str(tree), "--chip", "M9 Ultra"])
    assert result.exit_code == 2
    assert "unknown chip 'M9 Ultra'" in result.output and "M1, M1 Pro, M1 Max" in result.output


def test_forecast_json_gives_flops_bytes_and_the_estimate_per_chip(tmp_path, pack):
    pytest.importorskip("diffusers", reason="forecast needs the verify extra (torch, diffusers)")
    from latentsync_mps.port.planning import make_plan
    from latentsync_mps.port.transaction import commit

    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    commit(make_plan(tree, pack))
    result = runner.invoke(app, ["forecast", str(tree), "--json", "--frames", "4", "--resolution", "128"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    row = next(r for r in report["configurations"] if r["name"] == "mps-float16-chunked")
    phases = row["work"]
    assert {"vae encode", "denoise step 1", "denoise step 2", "vae decode", "face paste"} <= set(phases)
    assert phases["denoise step 2"]["flops"] == phases["denoise step 1"]["flops"] > 0
    assert 0 < phases["denoise step 2"]["attention_flops"] < phases["denoise step 2"]["flops"]
    found = report["estimate"]["configurations"]["mps-float16-chunked"]
    totals = found["work"]
    parts = totals["parts"]
    assert totals["chunk"]["flops"] == (
        parts["vae encode"]["flops"] + 20 * parts["unet per step"]["flops"] + parts["vae decode"]["flops"]
    )
    seconds = {c["chip"]: c["gpu_seconds"] for c in found["chips"]}
    assert len(seconds) == len(estimate.load_chips())
    assert seconds["Apple M4 Max"] < seconds["Apple M4 Pro"] < seconds["Apple M4"]
    assert report["estimate"]["leaves_out"]
