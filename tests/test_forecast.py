"""`lsync-port forecast` on the fixture: a shape-only run on meta tensors at 1.6's real size.

The fixture's UNet is small, but its attention runs at the real token counts (512x512 frames:
4096 latent tokens, 16 frames, batch doubled by guidance) and the VAE is the real one, so the
figures show what the port's chunking is for: the unchunked mps score matrix is 2**32 bytes in
float16 and twice that in float32. Meta tensors: the ported run takes seconds of CPU time.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import Exit
from latentsync_mps.features.forecast import (
    CONFIG_FALLBACKS,
    METAL_BUFFER_LIMIT,
    Configuration,
    ForecastReport,
    inference_config,
    load_facts,
)
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit
from latentsync_mps.render.forecast import render

pytest.importorskip("torch", reason="forecast needs the verify extra (torch, diffusers)")
pytest.importorskip("diffusers", reason="forecast needs the verify extra (torch, diffusers)")

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
GIB = 2**30


def forecast(tree, *args: str):
    result = runner.invoke(app, ["forecast", str(tree), *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def ported_report(tmp_path_factory, pack):
    tree = tmp_path_factory.mktemp("forecast") / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    commit(make_plan(tree, pack))
    code, output = forecast(tree, "--json", "--resolution", "512", "--frames", "16", "--steps", "3")
    assert code == 0, output
    return json.loads(output)


def rows(report) -> dict[str, dict]:
    return {row["name"]: row for row in report["configurations"]}


def test_json_names_the_tree_and_every_configuration(ported_report):
    report = ported_report
    assert report["release"] == "1.6" and report["ported"] is True
    assert report["frames"] == 16 and report["resolution"] == 512 and report["torch"]
    assert report["config"] == "configs/unet/stage2.yaml"
    # Whisper tiny (the fixture's cross_attention_dim 384): 10 feature indices x 5 layer outputs.
    assert report["audio_features_shape"] == [2, 16, 50, 384]
    got = {(r["device"], r["dtype"], r["chunking"]) for r in report["configurations"]}
    assert got == {
        ("cuda", "float16", None),
        ("mps", "float16", True),
        ("mps", "float16", False),
        ("mps", "float32", True),
        ("mps", "float32", False),
    }
    for row in report["configurations"]:
        assert row["status"] == "pass", row
        assert row["peak_bytes"] > row["weights_bytes"] > 0
        assert 0 < row["largest_buffer_bytes"] < row["peak_bytes"]


def test_chunking_shrinks_the_largest_mps_buffer_below_metals_limit(ported_report):
    by_name = rows(ported_report)
    for dtype in ("float16", "float32"):
        chunked, unchunked = by_name[f"mps-{dtype}-chunked"], by_name[f"mps-{dtype}-unchunked"]
        assert chunked["largest_buffer_bytes"] < unchunked["largest_buffer_bytes"]
        assert chunked["peak_bytes"] < unchunked["peak_bytes"]
        assert chunked["largest_buffer_bytes"] <= METAL_BUFFER_LIMIT
        # Unchunked, the biggest buffer is the attention score matrix of the MPS kernel: 2 (guidance)
        # x 16 frames x 4 heads (the fixture's 32 channels / head_dim 8) x 4096 x 4096 tokens.
        assert "scaled_dot_product_attention_math_for_mps" in unchunked["largest_buffer_op"]
        element = 2 if dtype == "float16" else 4
        assert unchunked["largest_buffer_bytes"] == 2 * 16 * 4 * 4096 * 4096 * element
    assert by_name["mps-float32-unchunked"]["over_metal_limit"] is True
    assert by_name["mps-float16-chunked"]["over_metal_limit"] is False


def test_float32_needs_more_than_float16(ported_report):
    by_name = rows(ported_report)
    for chunking in ("chunked", "unchunked"):
        f16, f32 = by_name[f"mps-float16-{chunking}"], by_name[f"mps-float32-{chunking}"]
        assert f32["peak_bytes"] > f16["peak_bytes"]
        # UNet and VAE double; the whisper model is float32 in both.
        assert f16["weights_bytes"] < f32["weights_bytes"] < 2 * f16["weights_bytes"]


def test_cuda_flash_attention_keeps_no_score_matrix(ported_report):
    by_name = rows(ported_report)
    cuda = by_name["cuda-float16"]
    assert "scaled_dot_product" not in cuda["largest_buffer_op"]
    assert cuda["largest_buffer_bytes"] < by_name["mps-float16-unchunked"]["largest_buffer_bytes"]


def test_every_phase_is_counted_and_steps_repeat_from_the_second(ported_report):
    phases = rows(ported_report)["mps-float16-chunked"]["phases"]
    assert list(phases) == ["inputs", "vae encode", "denoise step 1", "denoise step 2", "denoise step 3", "vae decode"]
    # Step 2 carries step 1's leftovers (as the pipeline's loop does); from then on it repeats.
    assert phases["denoise step 3"]["peak_bytes"] == phases["denoise step 2"]["peak_bytes"]
    assert phases["denoise step 2"]["peak_bytes"] >= phases["denoise step 1"]["peak_bytes"]


def test_human_output_is_a_table_in_gib_with_the_metal_line(ported_report):
    console = Console(record=True, width=200)
    fields = {f.name for f in dataclasses.fields(Configuration)}
    configurations = [
        Configuration(**{k: v for k, v in row.items() if k in fields}) for row in ported_report["configurations"]
    ]
    top = {k: v for k, v in ported_report.items() if k != "configurations"}
    render(console, ForecastReport(**top, configurations=configurations))
    text = console.export_text()
    f32 = rows(ported_report)["mps-float32-unchunked"]
    assert f"{f32['peak_bytes'] / GIB:.2f}" in text and "GiB" in text
    assert "Metal limit" in text and "mps-float32-unchunked" in text.split("Metal limit")[1]
    assert "mps-float16-chunked" not in text.split("Metal limit")[1]


def test_an_unported_tree_gets_the_cuda_row_and_is_told_why_not_the_others(fixture_tree):
    code, output = forecast(fixture_tree, "--json", "--frames", "2", "--resolution", "128", "--steps", "1")
    assert code == 0, output
    report = json.loads(output)
    assert report["ported"] is False
    by_name = rows(report)
    assert by_name["cuda-float16"]["status"] == "pass" and by_name["cuda-float16"]["peak_bytes"] > 0
    for name in ("mps-float16-chunked", "mps-float32-unchunked"):
        assert by_name[name]["status"] == "skip" and "need a ported tree" in by_name[name]["detail"]


def test_a_1_0_tree_is_forecast_too(tmp_path, pack):
    """1.0's LipsyncPipeline takes (vae, audio_processor, audio_encoder, unet, scheduler), later ones
    (vae, audio_encoder, denoising_unet, scheduler): the child builds it by parameter name."""
    tree = tmp_path / "latentsync-1.0"
    shutil.copytree(FIXTURES / "latentsync-1.0", tree)
    commit(make_plan(tree, pack))
    code, output = forecast(tree, "--json", "--frames", "2", "--resolution", "128", "--steps", "1")
    report = json.loads(output)
    assert code == 0, report["reason"]
    assert report["release"] == "1.0" and report["ported"] is True
    assert all(row["status"] == "pass" for row in report["configurations"]), report["configurations"]


def test_the_real_vae_config_is_shipped_as_data():
    vae = load_facts()["vae"]
    assert vae["name"] == "stabilityai/sd-vae-ft-mse"
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL(**vae["config"])
    # sd-vae-ft-mse's published size: 83,653,863 parameters.
    assert sum(p.numel() for p in model.parameters()) == 83_653_863


def test_the_config_is_the_one_inference_sh_names(fixture_tree):
    assert inference_config(fixture_tree) == "configs/unet/stage2.yaml"  # no inference.sh: the fallback
    (fixture_tree / "configs/unet/stage2_512.yaml").write_text((fixture_tree / "configs/unet/stage2.yaml").read_text())
    (fixture_tree / "configs/unet/other.yaml").write_text((fixture_tree / "configs/unet/stage2.yaml").read_text())
    (fixture_tree / "inference.sh").write_text(
        'python -m scripts.inference \\\n    --unet_config_path "configs/unet/other.yaml" \\\n'
    )
    assert inference_config(fixture_tree) == "configs/unet/other.yaml"
    (fixture_tree / "inference.sh").unlink()
    assert inference_config(fixture_tree) == CONFIG_FALLBACKS[0]


def test_bad_input_is_one_line_and_an_exit_code(tmp_path, fixture_tree):
    code, output = forecast(tmp_path / "missing")
    assert code == Exit.USAGE and "no such directory" in output and "Traceback" not in output
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = forecast(empty)
    assert code == Exit.NOT_UPSTREAM and "not a recognised upstream tree" in output
    code, output = forecast(fixture_tree, "--python", str(tmp_path / "nopython"))
    assert code == Exit.USAGE and "no such interpreter" in output
    (fixture_tree / "configs/unet/stage2.yaml").unlink()
    code, output = forecast(fixture_tree)
    assert code == Exit.USAGE and "no UNet config found" in output
    assert len(output.strip().splitlines()) == 1


def test_a_config_the_tree_cannot_read_fails_the_forecast(fixture_tree):
    (fixture_tree / "configs/unet/stage2.yaml").write_text("model: [unclosed\n")
    code, output = forecast(fixture_tree, "--json")
    report = json.loads(output)
    assert code == Exit.FORECAST_FAILED
    assert "cannot read configs/unet/stage2.yaml" in report["reason"]


def test_the_meter_counts_live_storages_until_they_die():
    import torch

    from latentsync_mps.payload.forecast.meter import MemoryMeter

    meter = MemoryMeter()
    with meter:
        a = torch.empty(1024, device="meta")  # 4 KiB
        b = a.view(32, 32)  # a view: no new buffer
        c = torch.empty(2048, device="meta", dtype=torch.float16)  # 4 KiB
        assert meter.live == 8192
        del a, b
        assert meter.live == 4096  # a's storage died with its last view
        d = torch.cat([c, c])  # 8 KiB
        on_cpu = torch.ones(10_000)  # host memory: not counted
    assert meter.peak == 4096 + 8192
    assert meter.largest == 8192 and meter.largest_op.startswith("cat") and meter.largest_shape == (4096,)
    assert d.numel() == 4096 and on_cpu.numel() == 10_000
