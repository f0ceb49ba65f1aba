"""The simulator gives the tree only the torch.mps / torch.backends.mps names of its target torch.

torch.mps.recommended_max_memory came in torch 2.5 and torch.backends.mps.is_macos_or_newer in 2.3
(read from each macOS wheel by scripts/derive_mps_tables.py); LatentSync 1.0 pins 2.1.2 and 1.5 pins
2.4.1, so on their Mac a call to either is an AttributeError. One child process per target torch
(install() lasts for the life of a process; three in all, 2.1.2, 2.2.2 and 2.5.1, each mostly
importing torch): what the tree sees, where a call the target lacks fails
(verify's own check runner and traceback), and the runtime helper written into a ported tree.
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

pytest.importorskip("torch", reason="the simulator needs torch (verify extra)")

from latentsync_mps.pack import target_torch  # noqa: E402
from latentsync_mps.pack.target_torch import TargetTorch  # noqa: E402

PAYLOAD = Path(__file__).parent.parent / "src/latentsync_mps/payload"
HELPER = Path(__file__).parent.parent / "src/latentsync_mps/payload/runtime/_lsync_port.py"

CALLER = """
import torch


def sees():
    return {
        "recommended_max_memory": hasattr(torch.mps, "recommended_max_memory"),
        "is_macos_or_newer": hasattr(torch.backends.mps, "is_macos_or_newer"),
    }


def macos_check(spec, state):
    return str(torch.backends.mps.is_macos_or_newer(14, 0))  # L:call
"""

# Outside the tree: it stands for this torch's own internals and the libraries installed here.
DRIVER = """
import importlib.util, json, sys

def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

payload, tree, table, events = sys.argv[1:5]
protocol = load(payload + "/protocol.py", "lsync_port_protocol")
sim = protocol.load_sibling(payload + "/mpssim")
check_run = protocol.load_sibling(payload + "/verify/check_run.py")
sim.install(tree, None, table)
sys.path.insert(0, tree)
import torch
import caller
import _lsync_port as helper

out = {"sees": caller.sees(), "outside": torch.mps.recommended_max_memory() > 0}
check_run.EVENTS = events
spec = protocol.Spec(tree=tree, device="mps")
out["check_passed"] = check_run.run_check("macos", caller.macos_check, spec, {})
with open(events) as handle:
    out["check"] = json.loads(handle.read().splitlines()[-1])
try:
    free, total = helper.mem_get_info()
    out["helper"] = {"device": helper.device(), "total_memory": helper.total_memory(),
                     "mem_get_info": [free, total], "bf16": helper.is_bf16_supported(),
                     "dtype": str(helper.dtype())}
except Exception as error:
    out["helper"] = f"{type(error).__name__}: {error}"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def under(tmp_path_factory):
    """What a tree sees under the simulator installed for one target torch (one child each, cached)."""
    seen: dict[str, dict] = {}

    def run(version: str) -> dict:
        if version not in seen:
            root = tmp_path_factory.mktemp(f"torch-{version}")
            tree = root / "tree"
            tree.mkdir()
            (tree / "caller.py").write_text(textwrap.dedent(CALLER))
            shutil.copy(HELPER, tree / "_lsync_port.py")
            (root / "driver.py").write_text(DRIVER)
            table = target_torch.write_table(TargetTorch(version, "--target-torch"), root / "table.json")
            env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSYNC_")}
            done = subprocess.run(
                [sys.executable, str(root / "driver.py"), str(PAYLOAD), str(tree), str(table), str(root / "ev")],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            seen[version] = json.loads(done.stdout.strip().splitlines()[-1])
        return seen[version]

    return run


def call_line() -> int:
    lines = textwrap.dedent(CALLER).splitlines()
    return next(number for number, line in enumerate(lines, start=1) if "# L:call" in line)


def test_the_shipped_tables_carry_each_releases_mps_api():
    api = {v: target_torch.table_for(v)["mps_api"] for v in ("2.1.2", "2.2.2", "2.3.0", "2.4.1", "2.5.0")}
    assert "recommended_max_memory" not in api["2.4.1"]["torch.mps"]
    assert "recommended_max_memory" in api["2.5.0"]["torch.mps"]
    assert "is_macos_or_newer" not in api["2.2.2"]["torch.backends.mps"]
    assert "is_macos_or_newer" in api["2.3.0"]["torch.backends.mps"]
    assert "driver_allocated_memory" in api["2.1.2"]["torch.mps"]  # in every release


def test_public_api_reads_functions_and_all_but_not_private_names():
    from latentsync_mps.payload import mpssim as mps_sim

    text = "__all__ = ['Event', 'seed']\ndef seed(): pass\ndef _lazy(): pass\nclass Event: pass\nx = 1\n"
    assert mps_sim.public_api(text) == ["Event", "seed"]


@pytest.mark.parametrize(("version", "present"), [("2.1.2", False), ("2.5.1", True)])
def test_recommended_max_memory_is_there_only_from_torch_2_5(under, version, present):
    found = under(version)
    assert found["sees"]["recommended_max_memory"] is present
    assert found["outside"]  # code outside the tree (torch's own internals) still gets it


@pytest.mark.parametrize(("version", "passes"), [("2.2.2", False), ("2.5.1", True)])
def test_is_macos_or_newer_fails_the_check_at_its_call_site_before_torch_2_3(under, version, passes):
    # The 2.2.2 / 2.3.0 boundary itself: test_the_shipped_tables_carry_each_releases_mps_api.
    found = under(version)
    assert found["sees"]["is_macos_or_newer"] is passes
    assert found["check_passed"] is passes
    check = found["check"]
    if passes:
        assert (check["status"], check["detail"]) == ("pass", "True")  # the simulated Mac runs macOS 15
    else:
        assert check["status"] == "fail"
        assert check["detail"] == (
            "AttributeError: module 'torch.backends.mps' has no attribute 'is_macos_or_newer'"
            " (torch 2.2.2, the tree's target, has none)"
        )
        assert check["data"]["traceback"][-1] == f"caller.py:{call_line()} in macos_check"


@pytest.mark.parametrize("version", ["2.1.2", "2.5.1"])
def test_the_runtime_helper_runs_on_the_targets_api(under, version):
    helper = under(version)["helper"]
    assert isinstance(helper, dict), helper  # today's helper: AttributeError on 2.1.2
    assert helper["device"] == "mps"
    free, total = helper["mem_get_info"]
    assert helper["total_memory"] == total > 0 and 0 <= free <= total
    # bfloat16 on MPS: 2.3 and later on macOS 14+ (the simulated Mac runs 15); torch 2.1.2 has none.
    assert helper["bf16"] is (version != "2.1.2")
