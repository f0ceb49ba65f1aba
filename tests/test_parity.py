"""verify's parity check (`--device mps-sim`): the simulated MPS run against the CPU float32 run.

A port whose output drifts only on the (simulated) MPS device passes every other check; the
parity check alone must fail it, and say by how much (the PSNR) in its reason.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

pytest.importorskip("torch", reason="verify needs the verify extra (torch, diffusers, decord)")
pytest.importorskip("diffusers", reason="verify needs the verify extra (torch, diffusers, decord)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml (verify extra)")

PIPELINE = "latentsync/pipelines/lipsync_pipeline.py"
PASTE_BACK = "        return decoded * masks + pixel_values * (1 - masks)"
# A quarter of the value range added to every pixel, on MPS only: the CPU reference run is exact.
DRIFT_ON_MPS = PASTE_BACK + ' + 0.5 * (decoded.device.type == "mps")'


def test_an_output_that_drifts_on_mps_only_fails_parity_with_its_psnr(fixture_tree, pack):
    commit(make_plan(fixture_tree, pack))
    path = fixture_tree / PIPELINE
    text = path.read_text()
    assert text.count(PASTE_BACK) == 1
    path.write_text(text.replace(PASTE_BACK, DRIFT_ON_MPS))

    # One chunk (the fixture's num_frames, 4) is enough: the drift is in every frame. A reference of
    # its own: a cpu verify of the same fixture by another test may have kept one in the shared cache.
    command = ["verify", str(fixture_tree), "--json", "--device", "mps-sim", "--frames", "4", "--fresh-reference"]
    result = CliRunner().invoke(app, command)
    report = json.loads(result.output)
    assert result.exit_code == 11 and report["passed"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    # Everything before parity passes: the drift is visible only against the CPU run.
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
        "parity": "fail",
    }
    found = re.fullmatch(
        r"parity with CPU float32: differs from the CPU float32 run: PSNR (\d+\.\d) dB < 25\.0 dB, "
        r"max abs error (\d+)",
        report["reason"],
    )
    assert found, report["reason"]
    # +0.5 on a [-1, 1] range is about 64 of 255 where not clipped: far below the 25 dB bar.
    assert 5.0 < float(found[1]) < 20.0 and int(found[2]) >= 32


def test_the_error_measure_is_the_mean_of_squared_differences():
    """PSNR from the mean of the squared differences: a drift whose mean is zero (up in half the
    pixels, down in the other half) and an error in a few pixels only both fail the 25 dB bar; the
    square of the mean difference would call the first exact and the second 26 dB."""
    import numpy as np

    from latentsync_mps.payload.verify.reference import frame_error

    reference = np.full((4, 64, 64, 3), 128, np.uint8)
    assert frame_error(reference, reference.copy()) == (float("inf"), 0.0)

    zero_mean = reference.astype(np.int16)
    zero_mean[:, :, 0::2] += 40
    zero_mean[:, :, 1::2] -= 40
    psnr, largest = frame_error(zero_mean.astype(np.uint8), reference)
    assert largest == 40.0 and psnr == pytest.approx(10 * np.log10(255**2 / 40**2))  # 16.1 dB
    assert psnr < 25.0

    sparse = reference.astype(np.int16)
    sparse[:, :8, :] += 100  # one eighth of every frame, 100 of 255 off
    psnr, largest = frame_error(sparse.astype(np.uint8), reference)
    assert largest == 100.0 and psnr == pytest.approx(10 * np.log10(255**2 / (100**2 / 8)))  # 17.2 dB
    assert psnr < 25.0
