"""verify --device mps-sim judges a tree against its *target* torch: the one its requirements install
on a Mac (or --target-torch), from the tables shipped in the package (scripts/derive_mps_tables.py).

Cheap layers first (the shipped data, resolving the target, refusing unknown versions, the report),
then two verify runs on the fixture: one by default (torch 2.5.1, the fixture's pin) that must catch
ops 2.5.1 has no MPS kernel for, a buffer over 2**32 bytes and the float16 nearest-upsampling defect
at their call sites; one with --target-torch 2.13.0 that must pass with the same injected ops.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import real_latentsync_16
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import exit_code_of
from latentsync_mps.pack import target_torch
from latentsync_mps.pack.target_torch import TargetTorchError, known_versions, resolve
from latentsync_mps.port import transaction
from latentsync_mps.port.planning import make_plan

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


# ----------------------------------------------------------------------------------------------
# The shipped tables


def test_the_table_for_the_installed_torch_is_what_build_support_table_derives():
    torch = pytest.importorskip("torch", reason="needs torch (verify extra)")
    pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")
    from latentsync_mps.payload import mpssim as mps_sim

    installed = torch.__version__.split("+")[0]
    if installed not in known_versions():
        pytest.skip(f"no table shipped for torch {installed}")
    derived = mps_sim.build_support_table()
    shipped = target_torch.table_for(installed)
    assert shipped["ops"] == derived["ops"]
    assert shipped["inner"] == derived["inner"]
    assert shipped["counts"] == derived["counts"]
    assert shipped["mps_api"] == mps_sim.installed_api()  # torch.mps / torch.backends.mps, read the same way


def test_mps_kernels_registered_from_python_are_read_from_each_releases_own_files():
    pytest.importorskip("torch", reason="needs torch (verify extra)")
    from latentsync_mps.payload import mpssim as mps_sim

    text = (
        'mps_lib = torch.library.Library("aten", "IMPL", "MPS")\n'
        'mps_lib.impl("aten::linalg_lu_solve.out", linalg_lu_solve_out_mps)\n'
        'cpu_lib = torch.library.Library("aten", "IMPL", "CPU")\n'
        'cpu_lib.impl("aten::other.out", other)\n'
    )
    assert mps_sim.python_mps_kernels([text]) == {"linalg_lu_solve.out"}
    # torch 2.10 registers linalg_lu_solve.out for MPS from torch/_refs/linalg; 2.9.1 has no MPS kernel.
    assert target_torch.table_for("2.9.1")["ops"]["aten::linalg_lu_solve.out"] == "missing"
    assert target_torch.table_for("2.10.0")["ops"]["aten::linalg_lu_solve.out"] == "mps"


def test_tables_cover_every_release_and_say_where_they_came_from():
    versions = known_versions()
    for minor in range(1, 16):  # every minor release with a macOS arm64 wheel on the registry, 2.1 to 2.15
        assert any(v.startswith(f"2.{minor}.") for v in versions), minor
    assert {"2.12.0", "2.13.0", "2.14.1"} <= set(versions)
    data = target_torch._data()
    sources = {r["torch"]: r["source"] for r in data["releases"]}
    assert sources["2.5.1"].startswith("macOS arm64 wheel torch-2.5.1-")
    assert target_torch.TABLES.stat().st_size < 1_500_000


def test_every_shipped_table_comes_from_a_macos_arm64_wheel_with_its_minimum_macos():
    from packaging.utils import parse_wheel_filename

    for release in target_torch.releases():
        where = release["torch"]
        assert release["source"] == f"macOS arm64 wheel {release['wheel']}", where
        _, version, _, tags = parse_wheel_filename(release["wheel"])
        assert version.public == release["torch"], where
        platforms = {tag.platform for tag in tags}
        assert f"macosx_{release['min_macos'].replace('.', '_')}_arm64" in platforms, where
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", release["built"]), where
    minimum = {r["torch"]: r["min_macos"] for r in target_torch.releases()}
    # From 2.12 on, torch's macOS wheels are tagged macosx_14_0: those releases need macOS 14.
    wanted = {"2.11.0": "11.0", "2.12.0": "14.0", "2.13.0": "14.0", "2.14.1": "14.0"}
    assert {v: minimum[v] for v in wanted} == wanted


def test_the_simulated_mac_runs_at_least_the_macos_its_target_torch_needs():
    pytest.importorskip("torch", reason="needs torch (verify extra)")
    from latentsync_mps.payload.mpssim.simulator import SIMULATED_MACOS, simulated_macos

    assert simulated_macos(target_torch.table_for("2.14.1")) == max(SIMULATED_MACOS, (14, 0))
    assert simulated_macos({"min_macos": "16.1"}) == (16, 1)  # a future torch that needs macOS 16.1
    assert simulated_macos({"min_macos": None}) == SIMULATED_MACOS


@pytest.mark.parametrize(
    ("op", "in_2_5_1", "in_2_13_0"),
    [
        ("aten::upsample_nearest3d", "missing", "mps"),  # every Upsample3D of the UNet
        ("aten::_upsample_bicubic2d_aa", "missing", "mps"),  # restore_video
        ("aten::_linalg_det", "missing", "mps"),  # torch.det in AlignRestore
        ("aten::upsample_nearest2d", "mps", "mps"),
    ],
)
def test_tables_know_what_each_release_lacks(op, in_2_5_1, in_2_13_0):
    assert target_torch.table_for("2.5.1")["ops"][op] == in_2_5_1
    assert target_torch.table_for("2.13.0")["ops"][op] == in_2_13_0


def test_torchs_own_expectations_are_folded_per_release():
    with_expectations = [r["torch"] for r in target_torch._data()["releases"] if r["expectations"]]
    assert with_expectations[0] == "2.8.0"  # the first wheel that ships common_mps.py
    assert target_torch.table_for("2.5.1")["dtype_rules"] == {}
    rules = target_torch.table_for("2.11.0")["dtype_rules"]
    (histc,) = rules["histc"]  # float16 histc: no MPS kernel in that dtype
    assert histc["level"] == "error" and "float16" in histc["dtypes"]
    (grid,) = rules["grid_sampler_2d"]  # some inputs (border padding) unsupported: a warning
    assert grid["level"] == "warning" and grid["dtypes"] is None
    assert "scaled_dot_product_attention" not in rules  # UNDEFINED_XFAILLIST (dropout's randomness): not folded


def test_numerics_defects_carry_their_source_and_versions():
    (defect,) = [d for d in target_torch.defects_for("2.5.1") if d["id"] == "float16-nearest-upsampling-black-masks"]
    assert defect["source"] == "https://github.com/bytedance/LatentSync/issues/48"
    assert defect["dtypes"] == ["float16"] and defect["level"] == "error"
    assert target_torch.defects_for("2.0.1") == []  # outside the versions it affects


# ----------------------------------------------------------------------------------------------
# The simulator's judgements from a target table, in this process (nothing is installed into torch)


@pytest.fixture
def sim():
    pytest.importorskip("torch", reason="needs torch (verify extra)")
    from latentsync_mps.payload import mpssim as mps_sim

    def make(**table):
        table.setdefault("ops", {})
        table.setdefault("torch", "2.5.1")
        table.setdefault("target", {"version": table["torch"], "origin": "--target-torch", "note": ""})
        return mps_sim.Simulator(".", table, fallback_enabled=False)

    return make


def test_an_op_the_target_lacks_is_judged_by_its_name_or_warned_about(sim):
    import torch

    simulator = sim(ops={"aten::add.Tensor": "mps", "aten::add.out": "mps", "aten::mul.Tensor": "mps"})
    assert simulator._info(torch.ops.aten.add.Scalar).status == "mps"  # every overload of add has a kernel
    assert simulator.judged_by_name == {"aten::add.Scalar": "aten::add (mps)"}
    info = simulator._info(torch.ops.aten.sub.Tensor)  # no sub at all in this (made-up) target
    assert info.status == "absent-in-target"
    simulator.check_op(info.name, info.status)
    (finding,) = simulator.report()
    assert (finding["level"], finding["op"]) == ("warning", "aten::sub.Tensor")
    assert "not in torch 2.5.1's native_functions.yaml" in finding["message"]


def test_an_op_whose_other_overloads_disagree_is_not_judged_by_one_of_them(sim):
    """The name settles an absent overload only when every overload of that name in the target has
    one status: with one overload on MPS and one missing there, no one knows which the target's code
    path reaches, so it is a warning (absent), neither a pass nor a missing-kernel error."""
    import torch

    simulator = sim(ops={"aten::add.Tensor": "mps", "aten::add.out": "missing"})
    info = simulator._info(torch.ops.aten.add.Scalar)
    assert info.status == "absent-in-target"
    assert simulator.judged_by_name == {}
    simulator.check_op(info.name, info.status)
    assert [(f["level"], f["op"]) for f in simulator.report()] == [("warning", "aten::add.Scalar")]
    missing = sim(ops={"aten::add.Tensor": "missing", "aten::add.out": "missing"})
    assert missing._info(torch.ops.aten.add.Scalar).status == "missing"  # all agree: judged by the name


def test_dtype_rules_keyed_by_name_apply_to_every_overload(sim):
    """torch's common_mps.py keys its expectations by op name ("add"), the dispatcher names overloads
    ("aten::add.Tensor"): the rules of the name apply to each overload."""
    import torch

    rule = {"key": "add", "dtypes": ["float16"], "level": "error", "list": "UNIMPLEMENTED_XFAILLIST"}
    simulator = sim(ops={"aten::add.Tensor": "mps", "aten::add.Scalar": "mps"}, dtype_rules={"add": [rule]})
    for overload in (torch.ops.aten.add.Tensor, torch.ops.aten.add.Scalar):
        info = simulator._info(overload)
        assert [r["key"] for r in info.rules] == ["add"], info.name
        simulator.check_rules(info, (torch.zeros(2, dtype=torch.float16), 1), {})
        simulator.check_rules(info, (torch.zeros(2, dtype=torch.float32), 1), {})
    found = {(f["op"], f["dtype"], f["level"]) for f in simulator.report()}
    assert found == {("aten::add.Tensor", "float16", "error"), ("aten::add.Scalar", "float16", "error")}


def test_dtype_rules_and_defects_judge_the_first_inputs_dtype(sim):
    import torch

    table = target_torch.table_for("2.11.0")
    simulator = sim(ops=table["ops"], torch="2.11.0", dtype_rules=table["dtype_rules"], defects=table["defects"])
    histc = simulator._info(torch.ops.aten.histc.default)
    simulator.check_rules(histc, (torch.zeros(4, dtype=torch.float32),), {})
    assert simulator.report() == []  # float32 histc runs on MPS
    simulator.check_rules(histc, (torch.zeros(4, dtype=torch.float16),), {})
    nearest = simulator._info(torch.ops.aten.upsample_nearest3d.default)
    simulator.check_rules(nearest, (torch.zeros(1, 1, 1, 2, 2, dtype=torch.float16), [2, 4, 4]), {})
    simulator.check_rules(nearest, (torch.zeros(1, 1, 1, 2, 2, dtype=torch.float32), [2, 4, 4]), {})
    found = {(f["kind"], f["op"], f["dtype"], f["level"]) for f in simulator.report()}
    assert found == {
        ("dtype", "aten::histc", "float16", "error"),
        ("numerics", "aten::upsample_nearest3d", "float16", "error"),
    }


def test_device_memory_is_counted_per_storage(sim):
    import torch

    simulator = sim()
    whole = torch.zeros(1024)  # 4 KiB
    first = simulator.track(whole)
    simulator.track(whole[:10])  # a view: the same storage, counted once
    other = simulator.track(torch.zeros(256))
    assert (simulator.live_bytes, simulator.peak_bytes) == (5120, 5120)
    assert simulator.largest_buffer["bytes"] == 4096
    simulator.untrack(first)
    assert simulator.live_bytes == 5120  # the view still holds it
    simulator.untrack(first)
    simulator.untrack(other)
    assert (simulator.live_bytes, simulator.peak_bytes) == (0, 5120)
    assert simulator.report() == []  # nothing near Metal's 2**32-byte limit


# ----------------------------------------------------------------------------------------------
# Which torch a tree targets


@pytest.mark.parametrize(
    ("fixture", "version", "origin"),
    [
        ("latentsync", "2.5.1", "requirements.txt: torch==2.5.1"),
        ("latentsync-1.5", "2.4.1", "requirements.txt: torch==2.4.1"),
        ("latentsync-1.0", "2.1.2", "requirements.txt: torch==2.1.2"),
    ],
)
def test_a_tree_targets_the_torch_it_pins(fixture, version, origin):
    target = resolve(FIXTURES / fixture)
    assert (target.version, target.origin) == (version, origin)


def test_a_tree_pinning_no_torch_targets_the_newest_known_and_says_so():
    target = resolve(FIXTURES / "comfyui-latentsyncwrapper")
    assert target.version == target_torch.newest_known()
    assert target.origin == "no pin: newest known"
    assert "pin no torch" in target.note


def _tree(tmp_path: Path, requirements: str) -> Path:
    (tmp_path / "requirements.txt").write_text(requirements)
    return tmp_path


def test_markers_are_evaluated_for_a_mac(tmp_path):
    tree = _tree(
        tmp_path,
        'torch==2.5.1; platform_system != "Darwin"\n'
        'torch==2.8.0; platform_system == "Darwin" and platform_machine == "arm64"\n',
    )
    assert resolve(tree).version == "2.8.0"
    assert resolve(tree).origin.startswith("requirements.txt: torch==2.8.0;")


def test_a_range_resolves_to_the_newest_known_inside_it(tmp_path):
    target = resolve(_tree(tmp_path, "torch>=2.4,<2.6  # a comment\n"))
    assert target.version == "2.5.1" and "range" in target.note


def test_the_newest_release_in_a_range_is_compared_as_a_version_not_as_text(tmp_path):
    """As text "2.9.1" > "2.14.1"; as versions 2.14 is newer. Both the range and the no-pin default."""
    from packaging.version import Version

    known = target_torch.known_versions()
    assert {"2.9.1", "2.14.1"} <= set(known), "the case needs a two-digit minor release in the tables"
    assert resolve(_tree(tmp_path, "torch>=2.9\n")).version == max(known, key=Version)
    assert resolve(_tree(tmp_path, "torch>=2.8,<2.11\n")).version == "2.10.0"
    assert all(Version(target_torch.newest_known()) >= Version(v) for v in known)


def test_a_wildcard_pin_is_a_range_not_a_version(tmp_path):
    """`torch==2.5.*` names no single release: the newest known inside it, not the text "2.5.*"."""
    target = resolve(_tree(tmp_path, "torch==2.5.*\n"))
    assert target.version == "2.5.1" and "range" in target.note


def test_the_override_wins_and_drops_local_parts(tmp_path):
    target = resolve(_tree(tmp_path, "torch==2.5.1\n"), "2.13.0+cpu")
    assert (target.version, target.origin) == ("2.13.0", "--target-torch")


@pytest.mark.parametrize(("requirements", "override"), [("torch==1.13.1\n", None), ("", "9.9.9"), ("", "latest")])
def test_unknown_versions_are_refused_with_the_known_ones(tmp_path, requirements, override):
    with pytest.raises(TargetTorchError) as raised:
        resolve(_tree(tmp_path, requirements), override)
    assert "known: 2.1.0, " in str(raised.value) and "2.5.1" in str(raised.value)
    assert exit_code_of(raised.value) == 2


def test_cli_refuses_an_unknown_target_with_one_line(fixture_tree):
    result = runner.invoke(app, ["verify", str(fixture_tree), "--device", "mps-sim", "--target-torch", "1.13.1"])
    assert result.exit_code == 2
    assert "no MPS table for torch 1.13.1 (known: 2.1.0" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["verify", str(fixture_tree), "--device", "cpu", "--target-torch", "2.5.1"])
    assert result.exit_code == 2 and "--device mps-sim only" in result.output


def test_the_wrapper_report_names_its_host_stacks_torch(tmp_path):
    """The wrapper pins no torch: it runs on its host's, ComfyUI Desktop's by default (not the newest)."""
    pytest.importorskip("torch", reason="verify needs torch (verify extra)")
    tree = tmp_path / "wrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    # The target is chosen before the child starts: a 1 s run is enough to see it in the report.
    result = runner.invoke(app, ["verify", str(tree), "--device", "mps-sim", "--json", "--timeout", "1"])
    report = json.loads(result.output)
    assert report["target_torch"]["version"] == "2.10.0" != target_torch.newest_known()
    assert report["target_torch"]["origin"] == "host stack comfyui-desktop-macos: torch 2.10.0"
    assert report["stack"]["name"] == "comfyui-desktop-macos" and report["stack"]["default"] is True


def test_the_text_report_names_the_target_and_the_memory():
    from rich.console import Console

    from latentsync_mps.features.verify.runner import VerifyReport
    from latentsync_mps.render.verify import render_findings

    report = VerifyReport("t", "mps-sim", "python", "synthetic", [], True, "", 1.0)
    report.target_torch = {"version": "2.5.1", "origin": "requirements.txt: torch==2.5.1", "note": ""}
    report.simulator = {
        "macos": "15.0",
        "mac_memory_bytes": 16 * 2**30,
        "ops": 3,
        "distinct_ops": 2,
        "memory": {"peak_bytes": 3 * 2**20, "largest_buffer_bytes": 2**20, "largest_buffer_op": "aten::mm"},
    }
    console = Console(record=True, width=200)
    render_findings(console, report)
    text = console.export_text()
    assert "judged against torch 2.5.1 (requirements.txt: torch==2.5.1) on a simulated macOS 15.0" in text
    assert "macOS 15.0 Mac with 16 GB of memory" in text
    # A target whose wheel needs a newer macOS than 11: the report names both the modelled and the needed macOS.
    report.target_torch = {"version": "2.14.1", "origin": "--target-torch", "note": ""}
    report.simulator["min_macos"] = "14.0"
    console = Console(record=True, width=200)
    render_findings(console, report)
    assert (
        "judged against torch 2.14.1 (--target-torch) on a simulated macOS 15.0 Mac with 16 GB of memory "
        "(torch 2.14.1's macOS wheel needs macOS 14.0 or later)" in console.export_text()
    )
    assert "peak 3 MiB" in text and "largest buffer 1 MiB (aten::mm)" in text


# ----------------------------------------------------------------------------------------------
# verify on the fixture, by default and with --target-torch

# Injected into Upsample3D.forward (on the device path of every UNet forward). In float32, so that
# only the op table can object to them; the buffer is float32 too, 4 bytes over Metal's limit
# (never touched, so the CPU does not really commit 4 GiB).
INJECTED = {
    "det": "        torch.det(torch.eye(2, device=hidden_states.device))\n",
    "nearest-5d": '        F.interpolate(hidden_states[:, :1].float(), scale_factor=(1.0, 2.0, 2.0), mode="nearest")\n',
    "buffer": "        torch.empty(2**30 + 1, device=hidden_states.device)\n",
}
ANCHOR = "        dtype = hidden_states.dtype\n"
RESNET = "latentsync/models/resnet.py"


def inject(tree: Path, names: list[str]) -> dict[str, str]:
    path = tree / RESNET
    text = path.read_text()
    assert ANCHOR in text
    line = text[: text.index(ANCHOR)].count("\n") + 2  # the line after the anchor
    text = text.replace(ANCHOR, ANCHOR + "".join(INJECTED[n] for n in names), 1)
    path.write_text(text)
    return {name: f"{RESNET}:{line + i}" for i, name in enumerate(names)}


# One chunk of the fixture (num_frames 4) instead of verify's default two: what these tests judge
# (the ops each call site runs, the largest buffer) is the same in every chunk, at half the time.
ONE_CHUNK = ("--frames", "4")


def verify(tree: Path, *args: str) -> tuple[int, dict]:
    pytest.importorskip("torch", reason="verify needs torch (verify extra)")
    pytest.importorskip("yaml", reason="the MPS simulator reads native_functions.yaml with pyyaml")
    result = runner.invoke(app, ["verify", str(tree), "--json", "--device", "mps-sim", *args])
    return result.exit_code, json.loads(result.output)


def errors_at(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for finding in report["findings"]:
        if finding["level"] == "error":
            out.setdefault(finding["site"], []).append(finding)
    return out


def test_by_default_the_pinned_torch_catches_missing_ops_big_buffers_and_the_fp16_defect(fixture_tree, pack):
    # Every rule but interpolate-float32: Upsample3D's nearest upsampling stays in float16.
    rules = [r.id for r in pack.profiles["latentsync"].rules if r.default and r.id != "interpolate-float32"]
    transaction.commit(make_plan(fixture_tree, pack, rule_ids=rules))
    sites = inject(fixture_tree, ["det", "nearest-5d", "buffer"])
    code, report = verify(fixture_tree, *ONE_CHUNK)
    assert code == 11 and not report["passed"]
    assert report["target_torch"] == {"version": "2.5.1", "origin": "requirements.txt: torch==2.5.1", "note": ""}
    device = next(c for c in report["checks"] if c["name"] == "device")
    assert "checked against the MPS kernels of torch 2.5.1" in device["detail"]
    assert "on macOS 15.0" in device["detail"] and report["simulator"]["macos"] == "15.0"
    assert report["simulator"]["mac_memory_bytes"] == 16 * 2**30 and "16 GB of memory" in device["detail"]
    by_site = errors_at(report)
    assert {f["op"] for f in by_site[sites["det"]]} == {"aten::_linalg_det"}
    assert {f["op"] for f in by_site[sites["nearest-5d"]]} == {"aten::upsample_nearest3d"}
    (buffer,) = by_site[sites["buffer"]]
    assert (buffer["kind"], buffer["op"], buffer["bytes"]) == ("memory", "aten::empty.memory_format", 2**32 + 4)
    assert "2**32" in buffer["message"]
    # The float16 defect, at Upsample3D's own interpolate (resnet.py), with its source.
    lines = (fixture_tree / RESNET).read_text().splitlines()
    upsampling = {f"{RESNET}:{n}" for n, line in enumerate(lines, start=1) if 'mode="nearest")' in line}
    upsampling.discard(sites["nearest-5d"])
    numerics = [f for f in report["findings"] if f["kind"] == "numerics"]
    assert numerics and {f["site"] for f in numerics} <= upsampling
    assert all(f["level"] == "error" and f["op"] == "aten::upsample_nearest3d" for f in numerics)
    assert numerics[0]["source"] == "https://github.com/bytedance/LatentSync/issues/48"
    assert all(f["dtype"] == "float16" for f in numerics)
    memory = report["simulator"]["memory"]
    assert memory["largest_buffer_bytes"] == 2**32 + 4 and memory["largest_buffer_site"] == sites["buffer"]
    assert memory["peak_bytes"] > memory["largest_buffer_bytes"]


def test_the_fully_ported_fixture_passes_against_the_torch_it_pins(fixture_tree, pack):
    # The port rewrites what torch 2.5.1 lacks on MPS (3-D nearest upsampling, antialiased bicubic
    # resize, det): the fixture, which calls all three on the device, passes against its own pin.
    transaction.commit(make_plan(fixture_tree, pack))
    code, report = verify(fixture_tree, *ONE_CHUNK)
    assert code == 0, report["reason"]
    assert report["target_torch"] == {"version": "2.5.1", "origin": "requirements.txt: torch==2.5.1", "note": ""}
    assert not errors_at(report), report["findings"]
    seen = set(report["simulator"]["ops_seen"])
    assert not seen & {"aten::upsample_nearest3d", "aten::_upsample_bicubic2d_aa", "aten::_linalg_det"}


def test_with_a_target_that_has_the_kernels_the_fully_ported_fixture_passes(fixture_tree, pack):
    transaction.commit(make_plan(fixture_tree, pack))
    sites = inject(fixture_tree, ["det", "nearest-5d"])
    code, report = verify(fixture_tree, "--target-torch", "2.13.0", *ONE_CHUNK)
    assert code == 0, report["reason"]
    assert report["target_torch"]["version"] == "2.13.0" and report["target_torch"]["origin"] == "--target-torch"
    assert not errors_at(report), report["findings"]
    assert not [f for f in report["findings"] if f["kind"] == "numerics"]  # ported: float32 upsampling
    # The injected lines ran (their ops were seen on the device), and torch 2.13.0 has kernels for them.
    assert {"aten::_linalg_det", "aten::upsample_nearest3d"} <= set(report["simulator"]["ops_seen"]), sites
    memory = report["simulator"]["memory"]
    assert 0 < memory["largest_buffer_bytes"] < 2**32 and memory["peak_bytes"] >= memory["largest_buffer_bytes"]


# ----------------------------------------------------------------------------------------------
# Opt-in: a real LatentSync 1.6 checkout (LSYNC_UPSTREAM) with its dependency stack


REAL = real_latentsync_16()


@pytest.mark.upstream
@pytest.mark.skipif(REAL is None, reason="set LSYNC_UPSTREAM to a LatentSync 1.6 checkout (and LSYNC_UPSTREAM_PYTHON)")
def test_real_release_is_judged_against_the_torch_it_pins(tmp_path):
    """The ported 1.6 is judged against torch 2.5.1 (its requirements.txt), and passes: the port
    rewrites the ops that 2.5.1 has no MPS kernel for."""
    source, python = REAL
    tree = tmp_path / source.name
    shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    assert runner.invoke(app, ["apply", str(tree)]).exit_code == 0
    code, report = verify(tree, "--python", python, "--timeout", "900")
    assert report["target_torch"] == {"version": "2.5.1", "origin": "requirements.txt: torch==2.5.1", "note": ""}
    device = next(c for c in report["checks"] if c["name"] == "device")
    assert "checked against the MPS kernels of torch 2.5.1" in device["detail"]
    assert not errors_at(report), report["findings"]
    assert code == 0 and report["passed"], report["reason"]


def test_the_derive_script_reads_common_mps_statically_for_macos_15():
    pytest.importorskip("torch", reason="the script imports the simulator (verify extra)")
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "derive_mps_tables.py"
    spec = importlib.util.spec_from_file_location("derive_mps_tables", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = """
import torch
if torch.backends.mps.is_available():
    def mps_ops_modifier(ops, device_type="mps", sparse=False):
        SUPPORTED_COMPLEX_OPS = {"add"}
        UNIMPLEMENTED_XFAILLIST: dict = {
            "histc": [torch.float16, torch.bfloat16],
            "linalg.eig": None,
            "scatter_reduceamax": [torch.int32, torch.int64] if MACOS_VERSION < 15.0 else [torch.int64],
        }
        if MACOS_VERSION < 15.0:
            UNIMPLEMENTED_XFAILLIST.update({"quantile": None})
        MACOS_BEFORE_14_4_XFAILLIST = {"fft.hfft2": [torch.complex64]}
        ON_MPS_XFAILLIST = {"arange": [torch.uint8]}
        for op in ops:
            pass
        return ops
"""
    found = script.expectations(text)
    assert found == {
        "UNIMPLEMENTED_XFAILLIST": {
            "histc": ["bfloat16", "float16"],
            "linalg.eig": None,
            "scatter_reduceamax": ["int64"],  # the macOS 15 branch; no quantile (before 15 only)
        },
        "ON_MPS_XFAILLIST": {"arange": ["uint8"]},
    }
    with pytest.raises(SystemExit, match="unknown list NEW_XFAILLIST"):
        script.expectations(text.replace("ON_MPS_XFAILLIST", "NEW_XFAILLIST"))


def test_the_derive_script_keeps_the_shipped_releases_as_they_are_on_update():
    """--update rebuilds every shipped release from the file and writes it back unchanged, so adding one
    release's wheel leaves the others byte for byte (and their macOS wheel sources) as they were."""
    pytest.importorskip("torch", reason="the script imports the simulator (verify extra)")
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "derive_mps_tables.py"
    spec = importlib.util.spec_from_file_location("derive_mps_tables", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = json.loads(target_torch.TABLES.read_text(encoding="utf-8"))
    assert script.serialise(script.shipped(target_torch.TABLES)) == shipped
    assert script.min_macos({"macosx_14_0_arm64"}) == "14.0" and script.min_macos({"manylinux_2_28_x86_64"}) is None


def test_an_expectation_narrowed_by_its_release_judges_only_the_ops_it_names():
    # torch 2.8 to 2.12 list grid_sample for every dtype ("Unsupported Border padding mode": both samplers,
    # a warning since both have MPS kernels); 2.15 lists it for float32 only, for the 5-D bicubic sampler.
    old = target_torch.table_for("2.12.0")["dtype_rules"]
    assert [r["level"] for r in old["grid_sampler_2d"]] == ["warning"]
    new = target_torch.table_for("2.15.0")["dtype_rules"]
    assert "grid_sampler_2d" not in new
    assert new["grid_sampler_3d"] == [
        {"key": "nn.functional.grid_sample", "list": "UNIMPLEMENTED_XFAILLIST", "dtypes": ["float32"], "level": "error"}
    ]
