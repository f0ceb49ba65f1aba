"""scripts/mps_sim_fidelity.py's comparison logic, on a handful of ops (the full run is not CI: minutes).

The expectations are read from the installed torch's real common_mps.py; the ops are small stand-ins
for OpInfos (op_db itself takes half a minute to import), run through the real simulator in a child
process (`install()` patches torch for the rest of the process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the MPS simulator needs torch (verify extra)")
pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mps_sim_fidelity.py"
spec = importlib.util.spec_from_file_location("mps_sim_fidelity", SCRIPT)
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)


@pytest.fixture(scope="module")
def lists():
    if not fidelity.common_mps_path().exists():
        pytest.skip(f"torch {torch.__version__} ships no common_mps.py")
    return fidelity.load_expectations()


class FakeOp:
    """What `expected` and `simulate` use of an OpInfo."""

    def __init__(self, name, fn, make, variant="", dtypes=(torch.float32, torch.float16), decorators=()):
        self.name, self.variant_test_name, self.fn, self.make = name, variant, fn, make
        self.dtypes, self.decorators = set(dtypes), list(decorators)

    def supported_dtypes(self, device_type):
        return self.dtypes

    def get_decorators(self, test_class, test_name, device, dtype, param_kwargs):
        return self.decorators

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def test_lists_are_read_from_torchs_source(lists):
    unimplemented = lists["UNIMPLEMENTED_XFAILLIST"]
    assert unimplemented["linalg.eig"] is None  # every dtype
    assert "float16" in unimplemented["nn.functional.conv_transpose3d"]  # one kernel's dtype gap
    assert "float16" in lists["ON_MPS_XFAILLIST"]["sort"]
    assert "new_empty" in lists["EMPTY_OPS_SKIPLIST"]


def test_expectations_follow_test_mps(lists):
    def op(name, **kw):
        return FakeOp(name, None, None, **kw)

    assert fidelity.expected(op("add"), "float32", lists) == ("runs", "expected to pass")
    assert fidelity.expected(op("linalg.eig"), "float32", lists)[0] == "fails"
    assert fidelity.expected(op("nn.functional.conv_transpose3d"), "float16", lists) == (
        "fails",
        "UNIMPLEMENTED_XFAILLIST (dtype)",
    )
    assert fidelity.expected(op("nn.functional.conv_transpose3d"), "float32", lists)[0] == "runs"
    assert fidelity.expected(op("sort"), "float16", lists) == ("wrong", "ON_MPS_XFAILLIST")  # unstable order
    assert fidelity.expected(op("new_empty"), "float32", lists) == ("skipped", "EMPTY_OPS_SKIPLIST")
    assert fidelity.expected(op("add", dtypes=(torch.float32,)), "float16", lists)[0] == "untested"
    skip = unittest.skip("not on MPS")
    assert fidelity.expected(op("add", decorators=[skip]), "float32", lists)[0] == "skipped"
    assert fidelity.expected(op("add", decorators=[unittest.expectedFailure]), "float32", lists)[0] == "xfail"


def test_device_specific_skips_are_probed_as_the_mps_test_class_sees_them():
    pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest")
    from torch.testing._internal import common_device_type as devices

    assert fidelity._kind(devices.onlyCUDA) == "skip"
    assert fidelity._kind(devices.skipMPS) == "skip"
    assert fidelity._kind(devices.skipCPUIfNoLapack) is None  # skips on the CPU only
    assert fidelity._kind(devices.skipCUDAIf(True, "cuda only")) is None
    assert fidelity._kind(unittest.expectedFailure) == "xfail"


def test_agreement_rules():
    assert fidelity.agrees("fails", "fails") and fidelity.agrees("runs", "runs")
    assert fidelity.agrees("wrong", "runs")  # a wrong result still runs
    assert not fidelity.agrees("fails", "runs") and not fidelity.agrees("runs", "fails")
    assert not fidelity.agrees("runs", "crashed") and not fidelity.agrees("fails", "crashed")
    for excluded in ("skipped", "untested", "xfail"):
        assert fidelity.agrees(excluded, "fails") is None
    assert fidelity.agrees("runs", "timeout") is None


CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    from types import SimpleNamespace
    spec = importlib.util.spec_from_file_location("mps_sim_fidelity", sys.argv[1])
    fidelity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fidelity)
    from latentsync_mps.payload import mpssim as mps_sim
    simulator = mps_sim.install(sys.argv[2])
    import torch

    class Op:
        def __init__(self, name, fn, make):
            self.name, self.variant_test_name, self.fn, self.make = name, "", fn, make
            self.decorators = []
        def supported_dtypes(self, device_type):
            return {torch.float32, torch.float16}
        def get_decorators(self, *args):
            return []
        def sample_inputs(self, device, dtype, requires_grad=False):
            for size in (3, 4):
                yield SimpleNamespace(input=self.make(size, device, dtype), args=(), kwargs={})
        def __call__(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    def raises(x):
        raise ValueError("not a finding")

    square = lambda n, device, dtype: torch.randn(n, n, dtype=dtype).to(device)
    ops = [
        Op("add", lambda x: torch.add(x, x), square),  # an MPS kernel: runs, as torch expects
        Op("linalg.eig", torch.linalg.eig, square),  # no MPS kernel: fails, as torch expects
        Op("nn.functional.conv_transpose3d", lambda x: x * 2, square),  # float16 gap the table cannot see
        Op("sort", lambda x: torch.sort(x), square),  # float16: a wrong result, which runs
        Op("logspace", lambda x: torch.logspace(0, 1, x.shape[0], device=x.device), square),  # its out= has none
        Op("nonzero", raises, square),  # an exception that is no finding: crashed
    ]
    rows = fidelity.compare(ops, fidelity.load_expectations(), simulator, samples=2, timeout=30)
    result = fidelity.summarize(rows, 2, 30, 1.0, torch.__version__)
    result["markdown"] = fidelity.markdown(result)
    print(json.dumps(result, default=str))
    """
)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, lists):
    folder = tmp_path_factory.mktemp("fidelity")
    (folder / "child.py").write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(folder / "child.py"), str(SCRIPT), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTORCH_ENABLE_MPS_FALLBACK": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdicts(measured):
    return {(r["op"], r["dtype"]): (r["expected"], r["verdict"], r["agrees"]) for r in measured["rows"]}


def test_simulator_verdicts_agree_where_they_should(measured):
    rows = verdicts(measured)
    for dtype in ("float32", "float16"):
        assert rows[("add", dtype)] == ("runs", "runs", True)
        assert rows[("linalg.eig", dtype)] == ("fails", "fails", True)
        assert rows[("logspace", dtype)] == ("fails", "fails", True)
        assert rows[("nonzero", dtype)] == ("runs", "crashed", False)
    assert rows[("sort", "float16")] == ("wrong", "runs", True)
    assert rows[("nn.functional.conv_transpose3d", "float32")] == ("runs", "runs", True)
    assert rows[("nn.functional.conv_transpose3d", "float16")] == ("fails", "runs", False)
    eig = next(r for r in measured["rows"] if r["op"] == "linalg.eig")
    assert [f["op"] for f in eig["findings"]] == ["aten::linalg_eig"]


def test_figures_and_report(measured):
    assert (measured["counted"], measured["agreed"]) == (12, 9)
    assert measured["agreement_percent"] == 75.0
    # With the dtype-specific entries folded in, the conv_transpose3d float16 gap would be found too.
    assert measured["folded_in"]["agreed"] == 10
    causes = {(d["op"], d["dtype"]): d["cause"] for d in measured["disagreements"]}
    assert "dtype gap" in causes[("nn.functional.conv_transpose3d", "float16")]
    assert "not a finding" in next(d["detail"] for d in measured["disagreements"] if d["op"] == "nonzero")
    assert "**Agreement: 75.0%** (9 of 12 op x dtype pairs)" in measured["markdown"]
    assert "`nn.functional.conv_transpose3d` float16: torch fails" in measured["markdown"]
