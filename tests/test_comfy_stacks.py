"""Host stacks (patches/stacks.toml): the data and its sources, `--stack` on verify and doctor, what the
verify child hides from the tree's code (verify/stack_model.py), and the wrapper fixture run as a Mac
on each ComfyUI stack would run it: it fails before apply where that Mac fails, and passes after."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack import stacks
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

runner = CliRunner()
COMFY_STACKS = ["comfyui-desktop-macos", "comfyui-manual-macos"]
STACK_MODEL = Path(stacks.__file__).parents[1] / "payload" / "verify" / "stack_model.py"


# ----------------------------------------------------------------------------------------------
# The data


def test_every_stack_fact_has_its_source():
    for stack in stacks.load():
        assert stack.source and re.fullmatch(r"\d{4}-\d{2}-\d{2}", stack.checked), stack.name
        for fact in ("python", "macos", "ffmpeg_on_path", "ffmpeg_libraries", "packages"):
            assert stack.sources.get(fact), f"{stack.name}: {fact} has no source"
        if stack.derived:
            assert "zipfile + ast" in stack.sources["derived"]


def test_the_stacks_the_issue_names():
    desktop = stacks.get("comfyui-desktop-macos")
    assert desktop.source.startswith("Comfy-Org/desktop assets/requirements/macos.compiled @ e2d964b7")
    assert desktop.python == "3.12" and not desktop.ffmpeg_on_path and not desktop.has("torchcodec")
    assert {k: desktop.packages[k] for k in ("torch", "torchvision", "torchaudio", "av")} == {
        "torch": "2.10.0",
        "torchvision": "0.25.0",
        "torchaudio": "2.10.0",
        "av": "16.1.0",
    }
    # derived from the wheels: 0.25.0 still has the video functions, 0.26+ does not; torchaudio goes
    # through torchcodec from 2.9 on
    assert {"read_video", "write_video"} <= set(desktop.derived["torchvision_io"])
    assert desktop.derived["torchaudio_needs_torchcodec"]
    manual = stacks.get("comfyui-manual-macos")
    assert "write_video" not in manual.derived["torchvision_io"] and manual.has("torchcodec")
    assert manual.derived["torchcodec"]["bundles_ffmpeg"] is False
    assert stacks.for_profile("comfyui-latentsyncwrapper") == (desktop, True)
    assert stacks.for_profile("latentsync")[0].torch_from_tree
    decord = {row["distribution"]: row for row in stacks.decord_wheels()}
    assert "3.12" in decord["decord2"]["pythons"] and "3.12" not in decord["eva-decord"]["pythons"]
    assert {"AudioReader", "VideoReader"} <= set(decord["decord2"]["readers"]) and not decord["decord"]["pythons"]


def test_the_child_model_hides_what_the_stack_lacks():
    desktop = stacks.get("comfyui-desktop-macos").child_model()
    assert desktop["block_modules"] == ["torchcodec"] and desktop["ffmpeg_on_path"] is False
    assert "TorchCodec is required for save_with_torchcodec" in desktop["raise"]["torchaudio.save"]["message"]
    manual = stacks.get("comfyui-manual-macos").child_model()
    assert not manual.get("block_modules") and not manual["raise"] and manual["needs_torchcodec"]
    assert "write_video" not in manual["keep"]["torchvision.io"]
    assert stacks.get("tree-pins").child_model() == {
        "name": "tree-pins",
        "python": "3.11",
        "ffmpeg_on_path": True,
        "raise": {},
    }


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("command", ["verify", "doctor"])
def test_an_unknown_stack_lists_the_known_ones(tmp_path, command):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    result = runner.invoke(app, [command, str(tree), "--stack", "comfyui-windows"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "--stack comfyui-windows: no such host stack; known: comfyui-desktop-macos" in said
    assert all(stack.name in said for stack in stacks.load())


def test_a_stack_for_another_kind_of_tree_says_which_fit(tmp_path):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    result = runner.invoke(app, ["verify", str(tree), "--stack", "tree-pins"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--stack tree-pins models latentsync trees, not comfyui-latentsyncwrapper" in said
    assert "for this tree: comfyui-desktop-macos, comfyui-manual-macos" in said


def test_doctor_names_the_stack_it_modelled(tmp_path):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    result = runner.invoke(app, ["doctor", str(tree), "--stack", "comfyui-manual-macos", "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["host stack"]["detail"].startswith("modelled: comfyui-manual-macos (named by --stack)")
    # the suite runs without the registry (LSYNC_PORT_MAC_RESOLVE=off): one line says it was not checked
    assert checks["requirements on the Mac"]["status"] == "warning"
    assert "could not check" in checks["requirements on the Mac"]["detail"]
    default = runner.invoke(app, ["doctor", str(tree), "--json"])
    checks = {c["name"]: c for c in json.loads(default.output)["checks"]}
    assert "modelled: comfyui-desktop-macos (the default for this tree)" in checks["host stack"]["detail"]
    assert "decord with a macOS arm64 wheel for CPython 3.12: decord2 " in checks["host stack"]["detail"]
    assert "eva-decord" not in checks["host stack"]["detail"]  # its macOS wheels stop at CPython 3.11


# ----------------------------------------------------------------------------------------------
# What the tree's code sees (stack_model.py, in a child as verify runs it)

TREE_CODE = """
import shutil, subprocess, sys
import av
out = {"which": shutil.which("ffmpeg"), "has_open": hasattr(av, "open")}
try:
    av.open
except AttributeError as error:
    out["open"] = str(error)
try:
    subprocess.run(["ffmpeg", "-version"], capture_output=True, check=True)
except FileNotFoundError as error:
    out["run"] = str(error)
out["shell"] = subprocess.run("ffmpeg -version", shell=True, capture_output=True).returncode
import torchaudio
try:
    torchaudio.save("x.wav", None, 16000)
except ImportError as error:
    out["save"] = str(error)
try:
    import torchcodec
except ModuleNotFoundError as error:
    out["torchcodec"] = str(error)
"""

OUTSIDE_CODE = """
import shutil, sys, av
sys.path.insert(0, sys.argv[1])
import stack_model, json
tree = sys.argv[2]
stack_model.install(tree, json.loads(sys.argv[3]))
sys.path.insert(0, tree)
import tree_code
outside = {"which": shutil.which("ffmpeg"), "open": hasattr(av, "open")}
print(json.dumps({"tree": tree_code.out, "outside": outside, "notes": stack_model.NOTES}))
"""


def test_the_tree_sees_only_what_the_stack_has(tmp_path):
    """A name the stack's av lacks, torchaudio's save without torchcodec, no ffmpeg on PATH: for the tree's
    code only; the same calls from outside the tree still work."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "tree_code.py").write_text(TREE_CODE)
    site = tmp_path / "site"  # a torchaudio and a torchcodec that work, as any installed ones would
    (site / "torchaudio").mkdir(parents=True)
    (site / "torchaudio" / "__init__.py").write_text("def save(*a, **k):\n    return 'saved'\nload = save\n")
    (site / "torchcodec").mkdir()
    (site / "torchcodec" / "__init__.py").write_text("")
    bin_dir = tmp_path / "bin"  # an ffmpeg on this machine's PATH
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "ffmpeg").chmod(0o755)
    model = stacks.get("comfyui-desktop-macos").child_model()
    model["keep"]["av"] = [n for n in model["keep"]["av"] if n != "open"]  # as if the stack's av had no open()
    driver = tmp_path / "driver.py"
    driver.write_text(OUTSIDE_CODE)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, str(driver), str(STACK_MODEL.parent), str(tree), json.dumps(model)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    inside, outside = seen["tree"], seen["outside"]
    assert inside["which"] is None and inside["has_open"] is False
    assert inside["open"] == "module 'av' has no attribute 'open' (stack comfyui-desktop-macos has none)"
    assert "No such file or directory: 'ffmpeg'" in inside["run"] and inside["shell"] == 127
    assert inside["save"].startswith("TorchCodec is required for save_with_torchcodec.")
    assert "No module named 'torchcodec'" in inside["torchcodec"]
    assert outside == {"which": str(bin_dir / "ffmpeg"), "open": True}


# ----------------------------------------------------------------------------------------------
# The wrapper fixture on each ComfyUI stack: fails before apply where that Mac fails, passes after


def _usable(python: str, stack: str) -> bool:
    probe = "import torchaudio, torchvision, av, soundfile, diffusers, omegaconf"
    if stack == "comfyui-manual-macos":  # its torchaudio.save goes through torchcodec and FFmpeg's libraries
        probe += "; import torch, tempfile; torchaudio.save(tempfile.mktemp('.wav'), torch.zeros(1, 160), 16000)"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=300).returncode == 0


def comfy_python(stack: str) -> str:
    """An interpreter with the wrapper stack's packages (scripts/install_comfy_stack.sh): this one, else the
    one scripts/test.sh made for them (LSYNC_PORT_COMFY_PYTHON: this one's CPU torch cannot load the
    registry's torchaudio), else the upstream stack's (LSYNC_UPSTREAM_PYTHON)."""
    candidates = [sys.executable]
    candidates += [
        os.environ[name] for name in ("LSYNC_PORT_COMFY_PYTHON", "LSYNC_UPSTREAM_PYTHON") if os.environ.get(name)
    ]
    for python in candidates:
        if Path(python).exists() and _usable(python, stack):
            return python
    pytest.skip(
        f"no interpreter here has the {stack} extra packages: bash scripts/test.sh makes one (.venv-comfy), or"
        " set LSYNC_PORT_COMFY_PYTHON to one prepared with bash scripts/install_comfy_stack.sh PYTHON"
        + (" --torchcodec, and FFmpeg's libraries (apt-get install ffmpeg)" if "manual" in stack else "")
    )


def _line_of(tree: Path, text: str) -> int:
    lines = (tree / "nodes.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# Where a Mac on each stack stops in the unported node (the fixture reproduces the wrapper's patterns):
# Desktop has no ffmpeg on PATH, so the node's check_ffmpeg refuses before anything runs; a manual
# install has torchaudio + torchcodec + Homebrew's ffmpeg, and torchvision 0.29 without write_video.
WHERE = {
    "comfyui-desktop-macos": ('raise RuntimeError("FFmpeg is required', "RuntimeError: FFmpeg is required"),
    "comfyui-manual-macos": (
        "io.write_video(",
        "AttributeError: module 'torchvision.io' has no attribute 'write_video'",
    ),
}


@pytest.mark.parametrize("device", ["cpu", "mps-sim"])
@pytest.mark.parametrize("stack", COMFY_STACKS)
def test_the_wrapper_fixture_fails_where_the_mac_fails_and_passes_ported(tmp_path, pack, stack, device):
    python = comfy_python(stack)
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    args = ["verify", str(tree), "--device", device, "--stack", stack, "--python", python, "--json"]
    where, error = WHERE[stack]
    line = _line_of(tree, where)

    before = runner.invoke(app, args)
    report = json.loads(before.output)
    assert before.exit_code == 11, report["reason"]
    failed = next(c for c in report["checks"] if c["status"] == "fail")
    assert failed["name"] == "node", report["reason"]
    assert failed["detail"].startswith(error), failed["detail"]
    assert f"nodes.py:{line} in " in failed["data"]["traceback"][-1]
    assert report["stack"]["name"] == stack and report["stack"]["default"] == (stack == "comfyui-desktop-macos")

    commit(make_plan(tree, pack))
    after = runner.invoke(app, args)
    report = json.loads(after.output)
    assert after.exit_code == 0, report["reason"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["node"]["data"]["mouth_mean"] > 8 and checks["node"]["data"]["mouth_change"] > 0.5
    assert "float32 on cpu in 0..1" in checks["node"]["detail"]
    assert report["preview"] and Path(report["preview"]).exists()
    if device == "mps-sim":  # the stack's torch, or (no table for it yet) the newest known before it, said so
        torch = stacks.get(stack).torch
        target = report["target_torch"]
        assert target["origin"] == f"host stack {stack}: torch {torch}"
        assert target["version"] == torch or target["note"].startswith(f"no MPS table for torch {torch} yet")


def _known_tables() -> list[str]:
    from latentsync_mps.pack.target_torch import known_versions

    return known_versions()


def test_a_stack_torch_without_a_table_is_judged_by_the_newest_before_it_and_says_so(tmp_path):
    from latentsync_mps.features.verify import runner as verify_runner
    from latentsync_mps.pack.target_torch import TargetTorchError

    host = stacks.get("comfyui-desktop-macos")
    assert verify_runner.stack_target_torch(host, tmp_path, None).version == "2.10.0"  # the stack's, not the newest
    newer = stacks.Stack(**{**host.__dict__, "packages": {**host.packages, "torch": "2.99.0"}})
    target = verify_runner.stack_target_torch(newer, tmp_path, None)
    newest = max(_known_tables(), key=lambda v: tuple(map(int, v.split("."))))
    assert target.version == newest and target.origin == "host stack comfyui-desktop-macos: torch 2.99.0"
    assert (
        target.note.startswith("no MPS table for torch 2.99.0 yet") and f"judged against torch {newest}" in target.note
    )
    assert verify_runner.stack_target_torch(newer, tmp_path, "2.5.1").origin == "--target-torch"
    older = stacks.Stack(**{**host.__dict__, "packages": {**host.packages, "torch": "1.0.0"}})
    with pytest.raises(TargetTorchError, match=r"torch 1\.0\.0: no MPS table"):
        verify_runner.stack_target_torch(older, tmp_path, None)


# ----------------------------------------------------------------------------------------------
# Opt-in: the real wrapper commits (LSYNC_COMFY), with the upstream stack's interpreter


def _real_wrappers() -> list[Path]:
    return [
        Path(p) for p in os.environ.get("LSYNC_COMFY", "").split(os.pathsep) if p and (Path(p) / "nodes.py").exists()
    ]


@pytest.mark.upstream
@pytest.mark.skipif(not _real_wrappers(), reason="set LSYNC_COMFY to real ComfyUI-LatentSyncWrapper checkouts")
@pytest.mark.parametrize("stack", COMFY_STACKS)
@pytest.mark.parametrize("wrapper", _real_wrappers() or [Path("unset")], ids=lambda p: p.name)
def test_real_wrapper_fails_where_the_mac_fails_and_passes_ported(tmp_path, pack, wrapper, stack):
    """The real nodes.py, unported, stops on each stack where that Mac stops; ported, it runs on cpu and mps-sim."""
    python = comfy_python(stack)
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(wrapper, tree, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    args = ["verify", str(tree), "--stack", stack, "--python", python, "--json", "--timeout", "1800"]
    where, error = WHERE[stack]
    before = runner.invoke(app, [*args, "--device", "cpu"])
    report = json.loads(before.output)
    assert before.exit_code == 11, report["reason"]
    failed = next(c for c in report["checks"] if c["status"] == "fail")
    assert failed["name"] == "node" and failed["detail"].startswith(error), failed["detail"]
    assert f"nodes.py:{_line_of(tree, where)} in " in failed["data"]["traceback"][-1]

    commit(make_plan(tree, pack))
    for device in ("cpu", "mps-sim"):
        after = runner.invoke(app, [*args, "--device", device])
        report = json.loads(after.output)
        assert after.exit_code == 0, f"{device}: {report['reason']}"
        node = next(c for c in report["checks"] if c["name"] == "node")
        assert node["data"]["mouth_change"] > 0.5 and report["stack"]["name"] == stack
