"""Simulator fixes found by scripts/mps_sim_fidelity.py (torch's OpInfo samples through the simulator).

Each of these crashed the simulator, or let an op that MPS cannot run pass, before the fix:
`Tensor.to(..., copy=True)` (torch._C._nn._parse_to rejects `copy`), `torch.nonzero` / `Tensor.nonzero`
(a hand-written binding with a device guard, reached before any dispatch), `torch.put` (a composite
kernel that calls `put_`, which has no MPS kernel), and `torch.linalg.lu_solve` (a false error: torch
registers its MPS kernel from Python, and the yaml does not list it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")

from latentsync_mps.payload import mpssim as mps_sim  # noqa: E402

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import mpssim as mps_sim

    simulator = mps_sim.install(sys.argv[2], cache_dir=sys.argv[3])
    import torch

    x = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to("mps")
    out = {}
    copied = x.to("mps", copy=True)
    out["copy_on_mps"] = [str(copied.device), copied is not x, copied.tolist() == x.tolist()]
    out["copy_to_cpu"] = [type(x.to("cpu", copy=True)).__name__, str(x.to("cpu", copy=True).device)]
    out["cpu_to_mps_copy"] = str(torch.ones(2).to("mps", copy=True).device)
    out["copy_with_dtype"] = str(x.to(torch.float16, copy=True).dtype)
    positional = x.to(torch.float32, False, True)  # to(dtype, non_blocking, copy)
    out["copy_positional"] = [positional is not x, str(x.to("mps", torch.float16, False, True).dtype)]
    out["nonzero"] = [str(x.nonzero().device), x.nonzero().tolist()]
    out["torch_nonzero"] = torch.nonzero(x).tolist()
    out["as_tuple"] = [[str(t.device), t.tolist()] for t in torch.nonzero(x, as_tuple=True)]
    out["cpu_nonzero"] = torch.nonzero(torch.tensor([0, 3])).tolist()  # CPU tensors: torch's own
    errors_before_put = [f["op"] for f in simulator.report() if f["level"] == "error"]
    x.put(torch.tensor([0]).to("mps"), torch.tensor([5.0]).to("mps"))
    out["errors_before_put"] = errors_before_put
    out["put"] = [(f["op"], f["level"]) for f in simulator.report() if f["op"] == "aten::put"]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    (tree / "child.py").write_text(CHILD)
    done = subprocess.run(
        [
            sys.executable,
            str(tree / "child.py"),
            os.path.dirname(os.path.dirname(mps_sim.__file__)),
            str(tree),
            str(tmp_path_factory.mktemp("cache")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTORCH_ENABLE_MPS_FALLBACK": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_to_accepts_copy(child):
    assert child["copy_on_mps"] == ["mps:0", True, True]
    assert child["copy_to_cpu"] == ["Tensor", "cpu"]
    assert child["cpu_to_mps_copy"] == "mps:0"
    assert child["copy_with_dtype"] == "torch.float16"
    assert child["copy_positional"] == [True, "torch.float16"]


def test_nonzero_runs_on_the_simulated_device(child):
    assert child["nonzero"] == ["mps:0", [[0, 1], [1, 0]]]
    assert child["torch_nonzero"] == [[0, 1], [1, 0]]
    assert child["as_tuple"] == [["mps:0", [0, 1]], ["mps:0", [1, 0]]]
    assert child["cpu_nonzero"] == [[1]]
    assert child["errors_before_put"] == []


def test_put_is_an_error_its_inplace_kernel_is_missing(child):
    assert child["put"] == [["aten::put", "error"]]


def test_table_marks_functional_ops_that_call_a_missing_inplace_op():
    table = mps_sim.build_support_table()
    assert table["ops"]["aten::put_"] == mps_sim.MISSING
    assert table["ops"]["aten::put"] == mps_sim.MISSING_INNER
    assert table["inner"]["aten::put"] == "aten::put_"
    # An in-place op with an MPS kernel leaves its composite functional variant alone.
    assert table["ops"]["aten::masked_fill_.Scalar"] == mps_sim.KERNEL
    assert table["ops"]["aten::masked_fill.Scalar"] == mps_sim.EXPLICIT


def test_table_counts_kernels_registered_from_python():
    # torch/_refs/linalg registers aten::linalg_lu_solve.out for MPS with torch.library (torch >= 2.10);
    # the yaml lists only CPU and CUDA. The functional op is structured on it.
    if not torch._C._dispatch_has_kernel_for_dispatch_key("aten::linalg_lu_solve.out", "MPS"):
        pytest.skip(f"torch {torch.__version__} registers no MPS kernel for linalg_lu_solve from Python")
    table = mps_sim.build_support_table()
    assert table["ops"]["aten::linalg_lu_solve.out"] == mps_sim.KERNEL
    assert table["ops"]["aten::linalg_lu_solve"] == mps_sim.KERNEL
