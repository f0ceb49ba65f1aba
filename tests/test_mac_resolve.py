"""Resolving a tree's requirements for the modelled Mac (mac_resolve.py), on uv's recorded outputs.

tests/data/uv/ holds what uv really printed (README.md there says how it was captured); the runner
is injected, so nothing here needs the network, except the one opt-in test at the end
(LSYNC_PORT_REGISTRY=1), which asks PyPI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from latentsync_mps.host import mac_resolve
from latentsync_mps.pack import stacks

DATA = Path(__file__).parent / "data" / "uv"
DESKTOP = "comfyui-desktop-macos"


def recorded(*names: str):
    """A runner that answers uv's calls, in order, with the recorded outputs (.out: success; .err: failure)."""
    calls = []

    def run(command, env):
        name = names[len(calls)]
        calls.append((command, env))
        text = (DATA / name).read_text()
        if name.endswith(".out"):
            return subprocess.CompletedProcess(command, 0, text, "Resolved\n")
        return subprocess.CompletedProcess(command, 2 if "unreachable" in name else 1, "", text)

    run.calls = calls
    return run


def tree_with(tmp_path, requirements: str) -> Path:
    (tmp_path / "requirements.txt").write_text(requirements)
    return tmp_path


WRAPPER = (
    "diffusers\nomegaconf\n"
    'eva-decord==0.6.1; platform_system != "Darwin" or python_version < "3.12"\n'
    'decord2; platform_system == "Darwin" and python_version >= "3.12"\nsoundfile\n'
)


def test_the_ported_wrapper_resolves_for_desktops_mac(tmp_path):
    run = recorded("wrapper-ported.out")
    result = mac_resolve.resolve(tree_with(tmp_path, WRAPPER), stacks.get(DESKTOP), run=run, uv="uv")
    assert result.status == "resolved" and not result.missing
    assert result.pins["decord2"] and result.pins["torch"] == "2.10.0"  # Desktop's torch, held by constraint
    command, env = run.calls[0]
    assert command[command.index("--python-platform") + 1] == "aarch64-apple-darwin"
    assert command[command.index("--python-version") + 1] == "3.12"
    assert command[command.index("--only-binary") + 1] == ":all:"
    assert env["MACOSX_DEPLOYMENT_TARGET"] == "14.0"
    constraints = Path(command[command.index("-c") + 1])
    assert not constraints.exists()  # a temporary file, gone after the call
    assert "resolves on macOS 14.0 arm64, CPython 3.12 (stack comfyui-desktop-macos)" in result.line()


def test_plain_decord_is_named_with_its_fix(tmp_path):
    run = recorded("wrapper-decord.err", "wrapper-ported.out")
    tree = tree_with(tmp_path, "diffusers\ndecord\nsoundfile\n")
    result = mac_resolve.resolve(tree, stacks.get(DESKTOP), run=run, uv="uv")
    assert result.status == "unresolvable"
    [missing] = result.missing
    assert missing.requirement == "decord" and not missing.builds_on_mac
    assert "no wheel for macosx_14_0_arm64" in missing.why
    assert "manylinux2010_x86_64, win_amd64 only" in missing.why
    assert "decord2" in missing.fix and "eva-decord" in missing.fix
    # decord was taken out of a copy and the rest resolved again: the tree's file is untouched
    second = Path(run.calls[1][0][-1])
    assert not second.exists()  # the copy without decord was temporary
    assert (tmp_path / "requirements.txt").read_text() == "diffusers\ndecord\nsoundfile\n"
    assert second.name == "requirements.txt" and len(run.calls) == 2


def test_every_requirement_without_a_wheel_is_named(tmp_path):
    """uv stops at the first: LatentSync 1.6 after apply has three, the last through a dependency."""
    requirements = "torch==2.5.1\npython_speech_features==0.6\nimageio-ffmpeg==0.5.1\nomegaconf==2.3.0\neinops==0.7.0\n"
    run = recorded("ls16-sdist-only.err", "ls16-imageio-ffmpeg.err", "ls16-dependency-sdist.err", "wrapper-ported.out")
    result = mac_resolve.resolve(tree_with(tmp_path, requirements), stacks.get("tree-pins"), run=run, uv="uv")
    assert [m.requirement for m in result.missing] == ["python-speech-features", "imageio-ffmpeg", "omegaconf"]
    speech, imageio, omegaconf = result.missing
    assert speech.builds_on_mac and "pure Python" in speech.fix
    assert "0.8.1" in imageio.fix and not imageio.builds_on_mac
    assert omegaconf.why.startswith("its dependency antlr4-python3-runtime") and omegaconf.builds_on_mac
    assert result.status == "unresolvable" and result.rounds == 4
    assert run.calls[0][0][run.calls[0][0].index("--python-version") + 1] == "3.11"
    assert "no wheel for python-speech-features, imageio-ffmpeg, omegaconf" in result.line()


def test_insightface_sdist_only_names_its_fix():
    err = (DATA / "ls16-sdist-only.err").read_text().replace("python-speech-features==0.6", "insightface==0.7.3")
    missing = mac_resolve.parse_failure(err.replace("python-speech-features", "insightface"))
    assert missing.requirement == "insightface" and missing.builds_on_mac
    assert "sdist only" in missing.fix and "xcode-select --install" in missing.fix


def test_without_the_registry_one_line_says_it_could_not_check(tmp_path):
    run = recorded("unreachable.err")
    result = mac_resolve.resolve(tree_with(tmp_path, WRAPPER), stacks.get(DESKTOP), run=run, uv="uv")
    assert result.status == "unchecked" and not result.missing
    assert result.line() == (
        "could not check that requirements.txt resolves on macOS 14.0 arm64, CPython 3.12 "
        "(stack comfyui-desktop-macos): the package registry cannot be reached (Connection refused (os error 111))"
    )


def test_without_uv_or_requirements_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(mac_resolve, "uv_binary", lambda: None)
    result = mac_resolve.resolve(tree_with(tmp_path, WRAPPER), stacks.get(DESKTOP))
    assert result.status == "unchecked" and "uv is not installed" in result.message and "[verify]" in result.message
    empty = mac_resolve.resolve(tmp_path / "nothing", stacks.get(DESKTOP), run=recorded())
    assert empty.status == "unchecked" and empty.message == "the tree has no requirements.txt"


def test_an_unknown_uv_error_is_not_taken_for_a_missing_wheel(tmp_path):
    def run(command, env):
        return subprocess.CompletedProcess(command, 2, "", "error: Couldn't parse requirement in `requirements.txt`\n")

    result = mac_resolve.resolve(tree_with(tmp_path, "=bad\n"), stacks.get(DESKTOP), run=run, uv="uv")
    assert result.status == "unchecked" and result.message.startswith("uv failed: ")


@pytest.mark.skipif(os.environ.get("LSYNC_PORT_REGISTRY") != "1", reason="asks PyPI: set LSYNC_PORT_REGISTRY=1")
def test_real_registry_resolves_the_ported_wrapper_and_names_plain_decord(tmp_path):
    if mac_resolve.uv_binary() is None:
        pytest.fail("uv is part of the verify extra; it is missing")
    desktop = stacks.get(DESKTOP)
    ported = mac_resolve.resolve(tree_with(tmp_path, WRAPPER + "face-alignment\n"), desktop)  # it needs torch
    assert ported.status == "resolved", ported.line()
    assert ported.pins["torch"] == desktop.packages["torch"] and "decord2" in ported.pins
    unported = mac_resolve.resolve(tree_with(tmp_path, "diffusers\ndecord\n"), desktop)
    assert [m.requirement for m in unported.missing] == ["decord"]
    offline = mac_resolve.resolve(tree_with(tmp_path, WRAPPER), desktop, index_url="http://127.0.0.1:9/simple")
    assert offline.status == "unchecked" and "cannot be reached" in offline.message
