"""verify on the 1.0 and 1.5 fixtures: face_alignment / mediapipe stood in by fixed landmarks,
each release's own constructor and call signatures, on cpu and mps-sim; and the one-line message
when the interpreter lacks what a release imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

pytest.importorskip("torch", reason="verify needs the verify extra (torch, diffusers, decord)")
pytest.importorskip("diffusers", reason="verify needs the verify extra (torch, diffusers, decord)")

runner = CliRunner()


def ported_copy(tmp_path, pack, fixture: str):
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / fixture, tree)
    commit(make_plan(tree, pack))
    return tree


def verify(tree, *args: str):
    result = runner.invoke(app, ["verify", str(tree), "--json", *args])
    return result.exit_code, json.loads(result.output)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, pack):
    """verify --device cpu on the ported 1.5 fixture, as its own process with the text output (what
    CI logs show): the subprocess, its --out folder. Its report.json is --json's report, so the
    1.5-on-cpu case of test_landmark_releases_pass judges this same run instead of a second one."""
    tmp_path = tmp_path_factory.mktemp("plain")
    tree = ported_copy(tmp_path, pack, "latentsync-1.5")
    command = [sys.executable, "-m", "latentsync_mps.cli", "verify", str(tree), "--device", "cpu"]
    result = subprocess.run(command + ["--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    return result, tmp_path / "out"


@pytest.mark.parametrize("device", ["cpu", "mps-sim"])
@pytest.mark.parametrize("fixture", ["latentsync-1.0", "latentsync-1.5"])
def test_landmark_releases_pass(tmp_path, pack, fixture, device, request):
    if (fixture, device) == ("latentsync-1.5", "cpu"):
        result, out = request.getfixturevalue("plain_run")
        code, report = result.returncode, json.loads((out / "report.json").read_text())
    else:
        tree = ported_copy(tmp_path, pack, fixture)
        code, report = verify(tree, "--device", device)
    assert code == 0, report["reason"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["pipeline"] == statuses["output"] == "pass"
    assert statuses["parity"] == ("skip" if device == "cpu" else "pass")
    if device == "mps-sim":  # each release's denoising loop, against its own target torch: no stalls (docs/stalls.md)
        stalls = report["simulator"]["stalls"]
        assert stalls["denoising_steps"] > 0
        assert stalls["in_loop"] == {"readbacks": 0, "copies": 0, "copy_bytes": 0, "cpu_ops": 0}, stalls["sites"]
    weights = next(c for c in report["checks"] if c["name"] == "weights")
    assert "face_alignment and mediapipe" in weights["detail"]
    assert weights["data"]["stand_ins"]["face_alignment"] == "stand-in module"
    output = next(c for c in report["checks"] if c["name"] == "output")
    assert output["data"]["mouth_mean"] > 8
    preview = Path(report["preview"])  # --json gives the contact sheet's path, beside the report
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.parent == Path(report["report_file"]).parent
    from PIL import Image

    with Image.open(preview) as sheet:  # four rows of frames: input, output, both mouths
        assert sheet.width > 4 * 128 and sheet.height > 2 * 128 + 2 * 64


def test_unported_landmark_release_fails_where_cuda_is_hard_coded(tmp_path):
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync-1.5", tree)
    code, report = verify(tree, "--device", "cpu")
    assert code == 11 and not report["passed"]
    failed = next(c for c in report["checks"] if c["status"] == "fail")
    assert "cuda" in failed["detail"].lower() or "CUDA" in report["reason"]


def test_missing_dependency_is_one_line_with_the_install_command(tmp_path, pack):
    tree = ported_copy(tmp_path, pack, "latentsync-1.0")
    (tree / "latentsync/utils/util.py").write_text(
        "import not_a_real_package_for_lsync  # noqa\n" + (tree / "latentsync/utils/util.py").read_text()
    )
    (tree / "requirements.txt").write_text(
        (tree / "requirements.txt").read_text() + "not-a-real-package-for-lsync==1.2\n"
    )
    code, report = verify(tree, "--device", "cpu")
    assert code == 11
    assert "\n" not in report["reason"]
    assert "lacks not_a_real_package_for_lsync (imported by latentsync/utils/util.py:1)" in report["reason"]
    assert f"{sys.executable} -m pip install 'not-a-real-package-for-lsync==1.2'" in report["reason"]


def test_wrong_version_names_the_pin(tmp_path, pack):
    """A name the installed library lacks (1.0 on a newer diffusers): the version and the tree's pin."""
    tree = ported_copy(tmp_path, pack, "latentsync-1.0")
    attention = tree / "latentsync/models/attention.py"
    attention.write_text(
        "from diffusers.models.attention import NoSuchBlockInAnyDiffusers  # noqa\n" + attention.read_text()
    )
    code, report = verify(tree, "--device", "cpu")
    assert code == 11
    assert (
        "diffusers" in report["reason"]
        and "does not provide what latentsync/models/attention.py:1 imports" in report["reason"]
    )
    assert (
        "the tree wants diffusers==0.11.1" in report["reason"]
        and "-m pip install 'diffusers==0.11.1'" in report["reason"]
    )


def _load_landmarks():
    import importlib.util

    from latentsync_mps.payload.verify import inputs

    spec = importlib.util.spec_from_file_location(
        "landmarks_under_test", inputs.Path(inputs.__file__).with_name("landmarks.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, inputs.face_landmarks


def test_stand_ins_answer_in_each_librarys_layout():
    np = pytest.importorskip("numpy")
    landmarks, marks = _load_landmarks()
    fa = landmarks.face_alignment_module(marks)
    model = fa.FaceAlignment(fa.LandmarksType.TWO_D, flip_input=False, device="cpu")
    image = np.zeros((80, 100, 3), np.uint8)
    (points,) = model.get_landmarks(image)
    assert points.shape == (68, 2)
    where = marks(100, 80)
    assert np.allclose(points[17:22].mean(0), where["left_brow"]) and np.allclose(points[27:36].mean(0), where["nose"])
    with pytest.raises(TypeError, match="LandmarksType"):
        fa.FaceAlignment("2D")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():  # the networks go to the device: an unusable one fails as it would there
        with pytest.raises((AssertionError, RuntimeError)):
            fa.FaceAlignment(fa.LandmarksType.TWO_D, device="cuda")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "mediapipe"}
    try:
        mp = landmarks.mediapipe_module(marks)
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True)
        result = mesh.process(image)
        face = result.multi_face_landmarks[0].landmark
        assert len(face) == 478
        assert (face[4].x * 100, face[4].y * 80) == pytest.approx(where["nose"])
        mesh.close()
        with pytest.raises(ValueError):
            mesh.process(image)
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] == "mediapipe"]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_install_keeps_a_real_mediapipe_and_replaces_only_its_models(monkeypatch):
    landmarks, marks = _load_landmarks()
    real = types.ModuleType("mediapipe")
    real.__version__ = "9.9"
    solutions = types.ModuleType("mediapipe.python.solutions")  # mediapipe's layout: an attribute
    solutions.face_mesh = types.SimpleNamespace(FaceMesh=object)
    solutions.face_detection = types.SimpleNamespace(FaceDetection=object)
    real.solutions = solutions
    monkeypatch.setitem(sys.modules, "mediapipe", real)
    monkeypatch.delitem(sys.modules, "face_alignment", raising=False)
    said = landmarks.install(marks)
    assert sys.modules["mediapipe"] is real and solutions.face_mesh.FaceMesh is not object
    assert said["mediapipe"] == "mediapipe 9.9, its FaceMesh stood in"
    assert sys.modules["face_alignment"].LSYNC_PORT_STANDIN
    monkeypatch.delitem(sys.modules, "face_alignment")


def test_plain_output_off_a_terminal_has_no_escape_codes(plain_run):
    """Piped (CI logs, files): finished checks as plain lines, no spinner, no colour codes."""
    result, out = plain_run
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "\x1b[" not in text and "\r" not in text
    assert "✓ denoising run, end to end (" in text and f"preview: {out / 'preview.png'}" in text
    assert (out / "report.json").exists()
