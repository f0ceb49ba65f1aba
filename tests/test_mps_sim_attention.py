"""The MPS simulator's attention on a target torch without MPS's fused kernel (before 2.5): the math
path's ops are checked on shadows (meta data, no arithmetic) and the values come from the CPU's fused
kernel, in float32. Its verdict must be the one computing the math path op by op gives: the same ops,
findings and largest buffer (an attention whose scores exceed Metal's 2**32-byte buffer is still
caught), the same values; a float16 attention whose scores could overflow still computes op by op.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")

from latentsync_mps.pack.target_torch import TargetTorch, write_table  # noqa: E402
from latentsync_mps.payload import mpssim as mps_sim  # noqa: E402

DRIVER = """
import importlib.util, json, sys
import torch
import torch.nn.functional as F
spec = importlib.util.spec_from_file_location(
    "lsync_port_mpssim", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]]
)
sim_module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sim_module
spec.loader.exec_module(sim_module)
simulator = sim_module.install(sys.argv[2], None, sys.argv[3])


def reset():
    simulator.findings.clear()
    simulator.ops_seen.clear()
    simulator.largest_buffer = {"bytes": 0, "op": None, "site": None}


def seen():
    return {
        "ops": sorted(simulator.ops_seen),
        "findings": sorted([f["kind"], f["op"], f["level"]] for f in simulator.report()),
        "largest": [simulator.largest_buffer["bytes"], simulator.largest_buffer["op"]],
    }


torch.manual_seed(0)
out = {}
# float16 at 300: scores up to about 2e5, over float16's 65504 (the math path overflows, as on MPS).
for name, dtype, size in (("float32", "float32", 1.0), ("float16", "float16", 1.0), ("overflow", "float16", 300.0)):
    q, k, v = ((size * torch.randn(2, 3, 64, 8)).to("mps").to(getattr(torch, dtype)) for _ in range(3))
    mask = torch.randn(2, 1, 64, 64).to("mps").to(getattr(torch, dtype))
    reset()
    before = simulator.peak_bytes
    routed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out[name + "_routed"] = seen()
    reset()
    op_by_op = torch.ops.aten._scaled_dot_product_attention_math.default(q, k, v, mask, 0.0, False, None)[0]
    out[name + "_op_by_op"] = seen()
    a, b = routed.cpu().float(), op_by_op.cpu().float()
    out[name + "_same_nan"] = bool((a.isnan() == b.isnan()).all())
    out[name + "_nan"] = bool(b.isnan().any() or b.isinf().any())
    out[name + "_max_difference"] = float((a - b).nan_to_num().abs().max())
    out[name + "_device"] = str(routed.device)
# Scores of 1 x 1 x 34000 x 34000 float32: 4.6 GB, over Metal's 2**32 bytes. Not one byte of them exists here.
reset()
big = torch.randn(1, 1, 34000, 4).to("mps")
F.scaled_dot_product_attention(big, big, big)
out["big"] = seen()
out["big_peak"] = simulator.peak_bytes
# diffusers' own attention (0.11, LatentSync 1.0): baddbmm with beta=0 on an empty input, in float16.
reset()
q16, k16 = torch.randn(4, 64, 8), torch.randn(4, 8, 64)
empty = torch.empty(4, 64, 64).half().to("mps")
scores = torch.baddbmm(empty, q16.half().to("mps"), k16.half().to("mps"), beta=0, alpha=0.35)
expected = torch.baddbmm(torch.zeros(4, 64, 64), q16.half().float(), k16.half().float(), beta=0, alpha=0.35)
difference = float((scores.cpu().float() - expected).abs().max())
out["baddbmm"] = [str(scores.dtype), str(scores.device), difference, seen()["ops"]]
import resource
out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention")
    table = write_table(TargetTorch("2.4.1", "--target-torch"), folder / "table.json")
    (folder / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(folder / "driver.py"), str(Path(mps_sim.__file__).parent), str(folder), str(table)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_float32_attention_is_judged_on_shadows_as_op_by_op_and_computes_the_same_values(attention):
    routed, op_by_op = attention["float32_routed"], attention["float32_op_by_op"]
    assert "aten::_safe_softmax" in op_by_op["ops"] or "aten::_softmax" in op_by_op["ops"]
    assert "aten::_scaled_dot_product_attention_math_for_mps" not in routed["ops"]  # not in torch 2.4.1
    assert set(op_by_op["ops"]) <= set(routed["ops"])
    assert routed["findings"] == op_by_op["findings"]
    assert routed["largest"] == op_by_op["largest"]
    assert attention["float32_max_difference"] < 1e-5
    assert attention["float32_device"] == "mps:0"


def test_float16_attention_that_cannot_overflow_is_judged_on_shadows_too(attention):
    routed, op_by_op = attention["float16_routed"], attention["float16_op_by_op"]
    assert set(op_by_op["ops"]) <= set(routed["ops"])
    assert routed["findings"] == op_by_op["findings"] and routed["largest"] == op_by_op["largest"]
    # float32 arithmetic rounded once against float16 rounded at every step: a few float16 ulps.
    assert attention["float16_max_difference"] < 2e-2 and not attention["float16_nan"]
    assert attention["float16_max_difference"] > 0  # the fused kernel's values, not the math path's


def test_float16_attention_that_may_overflow_computes_op_by_op_and_overflows_as_mps_would(attention):
    assert attention["overflow_routed"] == attention["overflow_op_by_op"]
    assert attention["overflow_same_nan"] and attention["overflow_max_difference"] == 0.0


def test_scores_over_metals_buffer_limit_are_caught_without_being_made(attention):
    big = attention["big"]
    assert ["memory", big["largest"][1], "error"] in big["findings"]
    assert big["largest"][0] >= 34000 * 34000 * 4 > 2**32
    # Counted on the simulated device as MPS would hold them, never allocated on this machine.
    assert attention["big_peak"] >= 34000 * 34000 * 4
    assert attention["max_rss"] < 2**31  # the math path op by op would have held the 4.6 GB scores


def test_baddbmm_that_ignores_its_input_is_judged_and_computes_the_product(attention):
    dtype, device, difference, ops = attention["baddbmm"]
    assert (dtype, device) == ("torch.float16", "mps:0") and "aten::baddbmm" in ops
    assert difference < 5e-3  # float32 product, scaled, rounded to float16 once
