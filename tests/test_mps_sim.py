"""The MPS simulator (`lsync-port verify --device mps-sim`).

Three layers: the support table read from the installed torch's native_functions.yaml (in this
process: it patches nothing); the simulated device on small snippets (in a child process, since
`install()` patches torch for the rest of the process it runs in); and `verify --device mps-sim`
on the fixture: passes when ported, fails when not, and reports each injected defect (float64 on
the device, a CPU tensor mixed in, an op without an MPS kernel, a CPU generator drawing on mps)
at its file:line in the tree. An opt-in test runs it on a real LatentSync 1.6 checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import real_latentsync_16
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")

from latentsync_mps.cli import app  # noqa: E402
from latentsync_mps.payload import mpssim as mps_sim  # noqa: E402
from latentsync_mps.port.planning import make_plan  # noqa: E402
from latentsync_mps.port.transaction import commit  # noqa: E402

SIM = Path(mps_sim.__file__).parent
TORCH_2_13 = torch.__version__.split("+")[0] == "2.13.0"
INSTALLED = torch.__version__.split("+")[0]
runner = CliRunner()


# ----------------------------------------------------------------------------------------------
# The support table


@pytest.fixture(scope="module")
def table():
    return mps_sim.build_support_table()


def test_table_counts_are_torchgens_for_torch_2_13(table):
    if not TORCH_2_13:
        pytest.skip(f"the counts are those of torch 2.13.0, this is {torch.__version__}")
    counts = table["counts"]
    assert len(table["ops"]) == 3101
    assert counts[mps_sim.KERNEL] == 890 + 2  # + linalg_lu_solve and its .out: registered for MPS from Python
    # torchgen: 738 composite-implicit (linalg_svd and linalg_svd.U become MPS's boxed CPU fallback),
    # 1109 composite-explicit (3 of them call an out= op without an MPS kernel), 364 without one
    # (_linalg_svd, _linalg_svd.U and embedding_renorm_ of them run on MPS's boxed CPU fallback).
    assert counts[mps_sim.IMPLICIT] + 2 == 738
    assert counts[mps_sim.EXPLICIT] + counts[mps_sim.MISSING_INNER] == 1109
    missing = counts[mps_sim.MISSING] + counts[mps_sim.MISSING_NO_CPU] + counts[mps_sim.MISSING_VIEW]
    assert missing + 3 + 2 == 364


@pytest.mark.parametrize(
    ("op", "status"),
    [
        ("aten::add.Tensor", mps_sim.KERNEL),  # through its structured delegate add.out
        ("aten::upsample_nearest3d", mps_sim.KERNEL),
        ("aten::grid_sampler_2d", mps_sim.KERNEL),
        ("aten::_scaled_dot_product_attention_math_for_mps", mps_sim.KERNEL),
        ("aten::conv2d", mps_sim.IMPLICIT),
        ("aten::scaled_dot_product_attention", mps_sim.IMPLICIT),
        ("aten::convolution", mps_sim.EXPLICIT),  # MPS routes it to _mps_convolution
        ("aten::_to_copy", mps_sim.EXPLICIT),
        ("aten::linalg_eig", mps_sim.MISSING),
        ("aten::_adaptive_avg_pool3d", mps_sim.MISSING),
        ("aten::_fused_sdp_choice", mps_sim.MISSING),  # no MPS entry: MPS's SDPA never asks it
        ("aten::_scaled_dot_product_flash_attention", mps_sim.MISSING_NO_CPU),  # CUDA only
        ("aten::linalg_lstsq", mps_sim.MISSING_INNER),  # its kernel calls linalg_lstsq.out
        ("aten::embedding_renorm_", mps_sim.BOXED),
    ],
)
def test_table_knows_what_mps_runs(table, op, status):
    if not TORCH_2_13 and op in ("aten::_adaptive_avg_pool3d", "aten::linalg_lstsq"):
        pytest.skip("checked against torch 2.13.0's yaml")
    assert table["ops"][op] == status
    if status == mps_sim.MISSING_INNER:
        assert table["inner"][op] == "aten::linalg_lstsq.out"


def test_fallback_rule():
    assert mps_sim.fallback_rescues(mps_sim.MISSING)  # a CPU kernel: the fallback runs it
    assert mps_sim.fallback_rescues(mps_sim.MISSING_INNER)
    assert not mps_sim.fallback_rescues(mps_sim.MISSING_NO_CPU)  # nothing to fall back to
    assert not mps_sim.fallback_rescues(mps_sim.MISSING_VIEW)  # a copy instead of a view
    assert not mps_sim.fallback_rescues(mps_sim.KERNEL)


@pytest.mark.parametrize(("value", "enabled"), [("1", True), ("0", False), ("", False)])
def test_fallback_variable_is_read_from_the_environment(monkeypatch, value, enabled):
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", value)
    assert mps_sim.Simulator(".", {"ops": {}}).fallback_enabled is enabled


def test_table_is_cached_per_torch_version(tmp_path):
    first = mps_sim.load_support_table(tmp_path)
    files = list(tmp_path.glob("mps-support-*.json"))
    assert len(files) == 1 and torch.__version__.replace("+", "") in files[0].name.replace("+", "")
    files[0].write_text(json.dumps({**first, "ops": {"aten::add.Tensor": "marker"}}))
    assert mps_sim.load_support_table(tmp_path)["ops"] == {"aten::add.Tensor": "marker"}
    files[0].write_text(json.dumps({**first, "torch": "0.0.1"}))  # another torch: rebuilt
    assert mps_sim.load_support_table(tmp_path)["ops"]["aten::add.Tensor"] == mps_sim.KERNEL


# ----------------------------------------------------------------------------------------------
# The simulated device, on snippets (one child process for all of them)

SNIPPET = """
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def facts():
    out = {}
    out["is_available"] = torch.backends.mps.is_available() and torch.backends.mps.is_built()
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    m = x.to("mps")
    out["device"] = str(m.device)
    out["is_mps"] = m.is_mps and not m.is_cpu
    out["factory"] = str(torch.zeros(2, device="mps").device)
    out["tensor"] = str(torch.tensor([1.0, 2.0], device=torch.device("mps")).device)
    torch.mps.empty_cache()
    torch.mps.synchronize()
    torch.mps.manual_seed(0)
    torch.mps.set_per_process_memory_fraction(0.5)
    out["memory"] = isinstance(torch.mps.current_allocated_memory(), int) and torch.mps.recommended_max_memory() > 0
    back = (m * 2 + 1).cpu()
    out["back_type"] = type(back).__name__
    out["back_device"] = str(back.device)
    out["values"] = back.tolist() == (x * 2 + 1).tolist()
    layer = nn.Linear(3, 4)
    reference = layer(x)
    layer.to("mps")
    out["param_device"] = str(layer.weight.device)
    out["param_is_parameter"] = isinstance(layer.weight, nn.Parameter)
    out["named_parameters"] = sorted(dict(layer.named_parameters()))
    out["linear_matches"] = torch.allclose(layer(m).cpu(), reference, atol=1e-6)
    layer.to("cpu")
    out["param_back"] = str(layer.weight.device)
    generator = torch.Generator(device="mps").manual_seed(3)
    out["generator_device"] = str(generator.device)
    out["generator_isinstance"] = isinstance(torch.default_generator, torch.Generator)
    stft = torch.stft(torch.randn(800).to("mps"), 400, 160, window=torch.hann_window(400, device="mps"),
                      return_complex=True)
    out["stft"] = [str(stft.device), list(stft.shape)]
    t = torch.randn(2, 3).to("mps")
    t.transpose_(0, 1)
    out["inplace_view"] = [list(t.shape), list(t.cpu().shape)]
    out["indexing"] = str(m[m > 2].device)
    half = torch.randn(3).to("mps").half()
    zeta = torch.special.zeta(half + 2, half.abs() + 1)
    out["zeta"] = [str(zeta.dtype), str(zeta.device)]
    return out


def sdpa():
    q = torch.randn(1, 2, 8, 4).to("mps").half()
    return F.scaled_dot_product_attention(q, q, q.transpose(-1, -2).contiguous().transpose(-1, -2))


def convolution():
    conv = nn.Conv2d(3, 4, 3).to("mps").half()
    return conv(torch.randn(1, 3, 8, 8).to("mps").half())


def float64_on_device():
    x = torch.randn(3).to("mps")
    return x.double()  # L:float64


def cpu_tensor_mixed_in():
    x = torch.randn(3).to("mps")
    return x + torch.randn(3)  # L:mix


def scalar_is_fine():
    x = torch.randn(3).to("mps")
    return x * torch.tensor(2.0)


def op_without_kernel():
    return torch.linalg.eig(torch.randn(3, 3).to("mps"))  # L:eig


def op_through_out_variant():
    return torch.linalg.lstsq(torch.randn(5, 3).to("mps"), torch.randn(5, 2).to("mps"))  # L:lstsq


def cpu_generator_on_mps():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, generator=generator, device="mps")  # L:cpu-generator


def mps_generator_on_cpu():
    generator = torch.Generator(device="mps").manual_seed(0)
    ok = torch.randn(3, generator=generator, device="mps")
    return ok, torch.randn(3, generator=generator)  # L:mps-generator


def numpy_of_device_tensor():
    return torch.randn(3).to("mps").numpy()  # L:numpy


def bfloat16_on_device():
    return torch.randn(3).to("mps").to(torch.bfloat16)  # L:bfloat16


def svd_on_device():
    return torch.svd(torch.randn(3, 3).to("mps"))  # L:svd


def fallback_enabled():
    return torch.linalg.eig(torch.randn(3, 3).to("mps"))  # L:eig-fallback
"""

DRIVER = """
import importlib.util, json, sys, traceback
spec = importlib.util.spec_from_file_location(
    "lsync_port_mpssim", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]]
)
sim_module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sim_module
spec.loader.exec_module(sim_module)
simulator = sim_module.install(sys.argv[2], sys.argv[3])
sys.path.insert(0, sys.argv[2])
import snippet
results = {}
for name in ("facts", "sdpa", "convolution", "float64_on_device", "cpu_tensor_mixed_in", "scalar_is_fine",
             "op_without_kernel", "op_through_out_variant", "cpu_generator_on_mps", "mps_generator_on_cpu",
             "numpy_of_device_tensor", "bfloat16_on_device", "svd_on_device"):
    try:
        value = getattr(snippet, name)()
        results[name] = value if name == "facts" else "ok"
    except Exception:
        results[name] = traceback.format_exc()
ops_before = set(simulator.ops_seen)
simulator.fallback_enabled = True  # as with PYTORCH_ENABLE_MPS_FALLBACK=1 in the environment
snippet.fallback_enabled()
print(json.dumps({"results": results, "findings": simulator.report(), "stats": simulator.stats(),
                  "ops": sorted(ops_before)}))
"""


@pytest.fixture(scope="module")
def snippets(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    (tree / "snippet.py").write_text(textwrap.dedent(SNIPPET))
    (tree / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(tree / "driver.py"), str(SIM), str(tree), str(tmp_path_factory.mktemp("cache"))],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTORCH_ENABLE_MPS_FALLBACK": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    lines = {}
    for number, line in enumerate((tree / "snippet.py").read_text().splitlines(), start=1):
        if "# L:" in line:
            lines[line.split("# L:")[1].strip()] = f"snippet.py:{number}"
    out["lines"] = lines
    return out


def findings_at(snippets, label):
    return [f for f in snippets["findings"] if f["site"] == snippets["lines"][label]]


def test_the_device_answers_as_mps_and_computes_on_the_cpu(snippets):
    results = snippets["results"]
    assert all(value == "ok" for name, value in results.items() if name != "facts"), results
    facts = results["facts"]
    assert facts["is_available"] is True
    assert facts["device"] == facts["factory"] == facts["tensor"] == "mps:0"
    assert facts["is_mps"] and facts["memory"] and facts["values"]
    assert (facts["back_type"], facts["back_device"]) == ("Tensor", "cpu")
    assert facts["param_device"] == "mps:0" and facts["param_is_parameter"]
    assert facts["named_parameters"] == ["bias", "weight"] and facts["linear_matches"]
    assert facts["param_back"] == "cpu"
    assert facts["generator_device"] == "mps:0" and facts["generator_isinstance"]
    assert facts["stft"] == ["mps:0", [201, 6]]
    assert facts["inplace_view"] == [[3, 2], [3, 2]]  # transpose_ changed the wrapper too
    assert facts["indexing"] == "mps:0"
    assert facts["zeta"] == ["torch.float16", "mps:0"]  # no CPU half kernel: computed in float32
    assert "aten::special_zeta" in snippets["stats"]["computed_in_float32"]


def test_routed_ops_are_judged_as_mps_runs_them(snippets):
    ops = set(snippets["ops"])
    # SDPA: MPS's own attention kernel, not the CPU flash kernels a Linux build would pick.
    assert "aten::_scaled_dot_product_attention_math_for_mps" in ops
    assert not {"aten::_fused_sdp_choice", "aten::_scaled_dot_product_flash_attention_for_cpu"} & ops
    # Convolution: judged at aten::convolution, never at the CPU's mkldnn kernels.
    assert "aten::convolution" in ops and not any("mkldnn" in op for op in ops)
    # Findings only where a defect was put: none from the facts, SDPA or the convolution.
    labelled = set(snippets["lines"].values())
    assert all(f["site"] in labelled for f in snippets["findings"]), snippets["findings"]


def test_float64_on_the_device_is_an_error_with_the_real_text(snippets):
    (finding,) = findings_at(snippets, "float64")
    assert (finding["kind"], finding["level"], finding["dtype"]) == ("dtype", "error", "float64")
    assert mps_sim.FLOAT64_ERROR in finding["message"]
    assert finding["function"] == "float64_on_device"


def test_cpu_tensor_mixed_in_is_an_error(snippets):
    (finding,) = findings_at(snippets, "mix")
    assert (finding["kind"], finding["level"], finding["op"]) == ("device", "error", "aten::add.Tensor")
    assert "mps:0 and cpu" in finding["message"]


def test_op_without_mps_kernel_is_an_error_the_fallback_would_rescue(snippets):
    (finding,) = findings_at(snippets, "eig")
    assert (finding["kind"], finding["level"], finding["op"]) == ("op", "error", "aten::linalg_eig")
    assert finding["fallback"] is True
    assert "is not currently implemented for the MPS device" in finding["message"]
    assert "PYTORCH_ENABLE_MPS_FALLBACK=1" in finding["message"]
    (warned,) = findings_at(snippets, "eig-fallback")  # with the variable set: runs, on the CPU
    assert warned["level"] == "warning" and warned["fallback"] is True


def test_composite_op_calling_an_out_variant_without_kernel_is_an_error(snippets):
    (finding,) = findings_at(snippets, "lstsq")
    assert finding["op"] == "aten::linalg_lstsq" and finding["level"] == "error"
    assert "'aten::linalg_lstsq.out' is not currently implemented" in finding["message"]


def test_generators(snippets):
    (cpu,) = findings_at(snippets, "cpu-generator")
    assert (cpu["kind"], cpu["level"]) == ("generator", "error")
    assert "Expected a 'mps' device type for generator but found 'cpu'" in cpu["message"]
    (mps,) = findings_at(snippets, "mps-generator")  # the draw on mps before it is fine
    assert "Expected a 'cpu' device type for generator but found 'mps'" in mps["message"]


def test_numpy_bfloat16_and_the_svd_fallback(snippets):
    (numpy,) = findings_at(snippets, "numpy")
    assert numpy["level"] == "error" and "can't convert mps:0 device type tensor to numpy" in numpy["message"]
    (bf16,) = findings_at(snippets, "bfloat16")
    assert (bf16["level"], bf16["dtype"]) == ("warning", "bfloat16") and "macOS 14" in bf16["message"]
    if not TORCH_2_13:  # after the checks above: they hold on any torch
        pytest.skip(f"the boxed svd fallback is checked against torch 2.13.0, this is {torch.__version__}")
    (svd,) = findings_at(snippets, "svd")  # MPS's own boxed CPU fallback: runs, slowly
    assert svd["level"] == "warning" and "linalg_svd" in svd["message"]


# ----------------------------------------------------------------------------------------------
# verify --device mps-sim on the fixture

# name: (file, old text, new text, where the finding is: lines after the first changed line)
DEFECTS = {
    "float64": (
        "latentsync/models/unet.py",
        "torch.arange(half, dtype=torch.float32, device=timesteps.device)",
        "torch.arange(half, dtype=torch.float64, device=timesteps.device)",
        0,
    ),
    "mixed": (
        "latentsync/pipelines/lipsync_pipeline.py",
        "masks = masks.to(device=device, dtype=weight_dtype)",
        "masks = masks.to(dtype=weight_dtype)",
        1,  # the CPU mask meets the device tensors on the next line: where real MPS raises
    ),
    "no-kernel": (
        "latentsync/models/resnet.py",
        "    def forward(self, hidden_states):\n        return self.conv(hidden_states)",
        "    def forward(self, hidden_states):\n"
        "        hidden_states = F.adaptive_avg_pool3d(hidden_states, hidden_states.shape[2:])\n"
        "        return self.conv(hidden_states)",
        0,
    ),
    "generator": (
        "latentsync/pipelines/lipsync_pipeline.py",
        'rand_device = "cpu" if device.type == "mps" else device',
        "rand_device = device",
        1,  # the draw on the next line
    ),
}


def verify(tree, *args: str):
    """verify --device mps-sim, judged against the installed torch's own MPS kernels (unless args name
    another --target-torch): these tests are about the simulated device itself. Judging a tree by the
    torch it pins (the default) is tests/test_target_torch.py's."""
    if "--target-torch" not in args:
        from latentsync_mps.pack.target_torch import known_versions

        if INSTALLED not in known_versions():
            pytest.skip(f"no shipped MPS table for the installed torch {INSTALLED}")
        args = (*args, "--target-torch", INSTALLED)
    result = runner.invoke(app, ["verify", str(tree), "--json", "--device", "mps-sim", *args])
    return result.exit_code, json.loads(result.output)


@pytest.fixture
def ported(fixture_tree, pack):
    commit(make_plan(fixture_tree, pack))
    return fixture_tree


def inject(tree: Path, rel: str, old: str, new: str) -> str:
    """Edit the tree; return file:line of the (first) changed line."""
    path = tree / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    start = text.index(old)
    text = text.replace(old, new, 1)
    path.write_text(text)
    lines = new.splitlines()
    changed = next(i for i, line in enumerate(lines) if line not in old.splitlines())
    return f"{rel}:{text[:start].count(chr(10)) + changed + 1}"


def test_ported_fixture_passes_on_the_simulated_device(ported):
    code, report = verify(ported)
    assert code == 0, report["reason"]
    assert report["passed"] and report["device"] == "mps-sim"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert set(statuses.values()) == {"pass"}, statuses  # parity with CPU float32 included
    assert "dtype float16" in next(c for c in report["checks"] if c["name"] == "import")["detail"]
    assert not [f for f in report["findings"] if f["level"] == "error"], report["findings"]
    assert report["simulator"]["ops"] > 1000


def test_unported_fixture_fails_where_cuda_is_hard_coded(fixture_tree):
    code, report = verify(fixture_tree)
    assert code == 11 and not report["passed"]
    failed = next(c for c in report["checks"] if c["status"] == "fail")
    assert failed["name"] == "pipeline"
    assert "Torch not compiled with CUDA enabled" in failed["detail"]
    assert any(frame.startswith("latentsync/") for frame in failed["data"]["traceback"])


def test_injected_defects_are_reported_at_their_file_and_line(ported):
    sites = {}
    for name, (rel, old, new, offset) in DEFECTS.items():
        changed = inject(ported, rel, old, new)
        sites[name] = f"{rel}:{int(changed.rsplit(':', 1)[1]) + offset}"
    code, report = verify(ported)
    assert code == 11 and not report["passed"]
    assert report["reason"].startswith("MPS simulator: ")
    # Every check still ran: the simulator records and goes on, so one run lists every defect.
    assert {c["name"]: c["status"] for c in report["checks"]}["output"] == "pass"
    by_site: dict[str, list[dict]] = {}
    for finding in report["findings"]:
        if finding["level"] == "error":
            by_site.setdefault(finding["site"], []).append(finding)
    assert set(by_site) == set(sites.values()), by_site
    (float64,) = by_site[sites["float64"]]
    assert float64["kind"] == "dtype" and float64["message"].endswith(mps_sim.FLOAT64_ERROR)
    (op,) = by_site[sites["no-kernel"]]
    assert (op["kind"], op["op"], op["fallback"]) == ("op", "aten::_adaptive_avg_pool3d", True)
    assert {f["kind"] for f in by_site[sites["mixed"]]} == {"device"}
    (generator,) = by_site[sites["generator"]]
    assert generator["kind"] == "generator" and "found 'cpu'" in generator["message"]


def test_findings_are_shown_grouped_by_call_site():
    from rich.console import Console

    from latentsync_mps.features.verify.runner import VerifyReport
    from latentsync_mps.render.verify import render_findings

    finding = {"kind": "op", "level": "error", "op": "aten::linalg_eig", "count": 2, "function": "f", "message": "m"}
    report = VerifyReport("t", "mps-sim", "python", "synthetic", [], False, "r", 1.0)
    report.findings = [
        {**finding, "site": "a.py:3"},
        {**finding, "site": "a.py:3", "kind": "dtype", "op": "aten::_to_copy"},
        {**finding, "site": "b.py:9", "level": "warning"},
    ]
    report.simulator = {"ops": 10, "distinct_ops": 4}
    console = Console(record=True, width=200)
    render_findings(console, report)
    text = console.export_text()
    assert "2 error(s), 1 warning(s)" in text
    assert text.count("a.py:3") == 1 and "b.py:9" in text  # one row group per call site
    assert text.index("a.py:3") < text.index("b.py:9")  # sites with errors first


# ----------------------------------------------------------------------------------------------
# Opt-in: a real LatentSync 1.6 checkout (LSYNC_UPSTREAM) with its dependency stack


REAL = real_latentsync_16()


@pytest.mark.upstream
@pytest.mark.skipif(REAL is None, reason="set LSYNC_UPSTREAM to a LatentSync 1.6 checkout (and LSYNC_UPSTREAM_PYTHON)")
def test_real_release_passes_and_injected_defects_are_caught(tmp_path):
    source, python = REAL
    tree = tmp_path / source.name
    shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    assert runner.invoke(app, ["apply", str(tree)]).exit_code == 0
    code, report = verify(tree, "--python", python, "--timeout", "900")
    assert code == 0, report["reason"]
    assert not [f for f in report["findings"] if f["level"] == "error"], report["findings"]

    # Defects injected into the real code (not the fixture's lines): each found at its own line.
    sites = {
        "float64": inject(
            tree,
            "latentsync/pipelines/lipsync_pipeline.py",
            "        latents = latents * self.scheduler.init_noise_sigma",
            "        latents = latents.double() * self.scheduler.init_noise_sigma\n        latents = latents.to(dtype)",
        ),
        "mixed": inject(
            tree,
            "latentsync/utils/affine_transform.py",
            "        inv_soft_mask_3d = inv_soft_mask.expand_as(inv_face)",
            "        inv_soft_mask_3d = inv_soft_mask.expand_as(inv_face) + torch.zeros(inv_face.shape)",
        ),
        "op": inject(
            tree,
            "latentsync/models/resnet.py",
            "        assert hidden_states.shape[1] == self.channels\n        hidden_states = self.conv(hidden_states)",
            "        assert hidden_states.shape[1] == self.channels\n"
            "        hidden_states = F.adaptive_avg_pool3d(hidden_states, hidden_states.shape[2:])\n"
            "        hidden_states = self.conv(hidden_states)",
        ),
        "generator": inject(
            tree,
            "latentsync/pipelines/lipsync_pipeline.py",
            '        rand_device = "cpu" if device.type == "mps" else device',
            "        rand_device = device",
        ),
    }
    rel, line = sites["generator"].rsplit(":", 1)
    sites["generator"] = f"{rel}:{int(line) + 1}"  # the draw on the next line
    code, report = verify(tree, "--python", python, "--timeout", "900")
    assert code == 11
    errors = {(f["site"], f["kind"]) for f in report["findings"] if f["level"] == "error"}
    expected = {
        (sites["float64"], "dtype"),
        (sites["mixed"], "device"),
        (sites["op"], "op"),
        (sites["generator"], "generator"),
    }
    assert expected <= errors, report["findings"]
