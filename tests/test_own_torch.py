"""The port runs on the torch each release pins for the Mac (1.0: 2.1.2, 1.5: 2.4.1, 1.6/main: 2.5.1).

Those releases have no MPS kernel for aten::upsample_nearest3d, aten::_upsample_bicubic2d_aa,
aten::_upsample_bilinear2d_aa and aten::_linalg_det (read from each release's macOS wheel's
native_functions.yaml). The helper computes them on mps from ops MPS has; here each form is checked
against the original op on the CPU, and the ported fixture's call sites are run through the
helper's mps branch under a dispatch mode that records every aten op: the missing ones never run.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the runtime helper is exercised with the verify extra (torch) installed")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from latentsync_mps.payload.runtime import _lsync_port as helper  # noqa: E402
from latentsync_mps.port.planning import make_plan  # noqa: E402
from latentsync_mps.port.transaction import commit  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
# What torch 2.5.1 (1.6 and main), 2.4.1 (1.5) and 2.1.2 (1.0) lack on MPS, by overload packet.
MISSING_ON_OLD_MPS = {"upsample_nearest3d", "_upsample_bicubic2d_aa", "_upsample_bilinear2d_aa", "_linalg_det"}


class OpRecorder(TorchDispatchMode):
    """Every aten op that runs, by packet name (`upsample_nearest3d`), with its inputs' dtypes."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.ops.append((func._overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))

    def names(self) -> set[str]:
        return {name for name, _ in self.ops}


@pytest.fixture
def as_mps(monkeypatch):
    """Take the helper's mps branch for CPU tensors (there is no MPS device here)."""

    def switch(module=helper):
        monkeypatch.setattr(module, "_on_mps", lambda tensor: isinstance(tensor, torch.Tensor))

    return switch


# -- 3-D nearest upsampling (Upsample3D) --------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "options",
    [{"scale_factor": [1.0, 2.0, 2.0]}, {"scale_factor": (1, 2, 3)}, {"size": (3, 10, 7)}, {"size": [3, 5, 5]}],
)
def test_nearest3d_over_folded_frames_equals_the_3d_op(as_mps, dtype, options):
    x = torch.randn(2, 4, 3, 5, 5).to(dtype)
    expected = torch.nn.functional.interpolate(x, mode="nearest", **options)
    as_mps()
    with OpRecorder() as recorder:
        got = helper.interpolate(x, mode="nearest", **options)
    assert torch.equal(got, expected) and got.dtype == dtype
    assert "upsample_nearest3d" not in recorder.names() and "upsample_nearest2d" in recorder.names()
    # float16 nearest is computed in float32 on mps (black masks, upstream issue 48).
    assert all(dtypes == (torch.float32,) for name, dtypes in recorder.ops if name == "upsample_nearest2d")


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 3, 5, 4)])
def test_float16_nearest_on_mps_runs_in_float32_and_comes_back_in_float16(as_mps, shape):
    """The seed's own black-mask fix (LatentSync issue 48): float16 nearest on MPS gave black masks,
    so on mps the helper computes nearest in float32 and casts back (4-D masks, the common case)."""
    mask = (torch.rand(shape) > 0.5).half()
    as_mps()
    with OpRecorder() as recorder:
        got = helper.interpolate(mask, scale_factor=2.0, mode="nearest")
    assert got.dtype == torch.float16
    assert torch.equal(got, torch.nn.functional.interpolate(mask.float(), scale_factor=2.0, mode="nearest").half())
    assert [dtypes for name, dtypes in recorder.ops if name == "upsample_nearest2d"] == [(torch.float32,)]


def test_nearest3d_that_resamples_frames_stays_3d(as_mps):
    x = torch.randn(1, 2, 3, 4, 4)
    as_mps()
    with OpRecorder() as recorder:
        got = helper.interpolate(x, scale_factor=2.0, mode="nearest")
    assert torch.equal(got, torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert "upsample_nearest3d" in recorder.names()  # no 2-D form exists; the fallback variable is the way


def test_off_mps_interpolate_is_the_plain_call():
    x = torch.randn(1, 2, 3, 4, 4).half()
    with OpRecorder() as recorder:
        got = helper.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest")
    assert torch.equal(got, torch.nn.functional.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest"))
    assert [dtypes for name, dtypes in recorder.ops if name == "upsample_nearest3d"] == [(torch.float16,)]


# -- antialiased resizing (restore_video) --------------------------------------------------------


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(37, 29), (64, 80), (48, 48)])
def test_antialiased_resize_as_matrices_equals_the_aa_op(as_mps, mode, size):
    torch.manual_seed(0)
    face = torch.rand(2, 3, 48, 48) * 2 - 1  # decoded faces are in [-1, 1]
    expected = torch.nn.functional.interpolate(face, size=size, mode=mode, antialias=True, align_corners=False)
    got = helper.antialiased_resize(face, size, mode)
    error = (got - expected).abs().max().item()
    assert error < 1e-6, f"max abs error {error:.2e}"  # float32 rounding only (measured 2.4e-7 at most)
    as_mps()
    helper.interpolate(face, size=size, mode=mode, antialias=True)  # the weights: computed once, on the CPU
    with OpRecorder() as recorder:
        routed = helper.interpolate(face, size=size, mode=mode, antialias=True)
    assert torch.equal(routed, got)
    assert not recorder.names() & MISSING_ON_OLD_MPS, recorder.names()
    assert recorder.names() & {"mm", "bmm", "matmul"}


def test_antialiased_resize_keeps_half_precision_and_3d_input(as_mps):
    face = torch.rand(3, 40, 40).half()
    expected = torch.nn.functional.interpolate(face[None].float(), size=(20, 30), mode="bicubic", antialias=True)[0]
    got = helper.antialiased_resize(face, (20, 30), "bicubic")
    assert got.dtype == torch.float16 and got.shape == (3, 20, 30)
    assert (got.float() - expected).abs().max().item() < 2e-3  # float16 rounding of values near 1


def test_torchvision_resize_goes_through_the_matrices_on_mps(as_mps):
    tvf = pytest.importorskip(
        "torchvision.transforms.functional", reason="no torchvision here (a LatentSync tree brings it)"
    )
    from torchvision.transforms import InterpolationMode

    face = torch.rand(3, 48, 48)
    expected = tvf.resize(face, size=[30, 36], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(helper.resize(face, [30, 36], interpolation=InterpolationMode.BICUBIC), expected)
    as_mps()
    helper.resize(face, [30, 36], interpolation=InterpolationMode.BICUBIC)
    with OpRecorder() as recorder:
        got = helper.resize(face, [30, 36], interpolation=InterpolationMode.BICUBIC)
    assert (got - expected).abs().max().item() < 2e-5 and not recorder.names() & MISSING_ON_OLD_MPS


# -- 2x2 determinant (AlignRestore) ---------------------------------------------------------------


def test_closed_form_det_equals_torch_det(as_mps):
    torch.manual_seed(0)
    matrices = torch.randn(64, 2, 2)
    expected = torch.det(matrices)
    as_mps()
    with OpRecorder() as recorder:
        got = helper.det(matrices)
        single = helper.det(matrices[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert single.shape == () and torch.sign(single) == torch.sign(expected[0])
    assert "_linalg_det" not in recorder.names()
    assert helper.det(torch.eye(3) * 2).item() == pytest.approx(8.0)  # larger ones: torch.det on the CPU


# -- the ported fixture's own call sites ----------------------------------------------------------


@pytest.fixture(scope="module")
def ported_tree(tmp_path_factory, pack):
    tree = tmp_path_factory.mktemp("own-torch") / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    commit(make_plan(tree, pack))
    return tree


@pytest.fixture
def ported_fixture(ported_tree, monkeypatch):
    """The 1.6-shaped fixture, ported, importable as `latentsync` (the modules are dropped afterwards)."""
    # A `latentsync` another test file left in sys.modules (the order of files differs per xdist
    # worker) would shadow this tree's: drop it first, as afterwards.
    for name in [m for m in sys.modules if m.split(".")[0] in ("latentsync", "scripts", "gradio_app")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(ported_tree))
    yield ported_tree
    for name in [m for m in sys.modules if m.split(".")[0] in ("latentsync", "scripts", "gradio_app")]:
        del sys.modules[name]


def test_ported_upsample3d_never_runs_upsample_nearest3d_on_mps(ported_fixture, as_mps):
    resnet = importlib.import_module("latentsync.models.resnet")
    as_mps(importlib.import_module("latentsync._lsync_port"))
    block = resnet.Upsample3D(4).eval()
    x = torch.randn(1, 4, 3, 6, 6)
    with torch.no_grad():
        expected = block.conv(torch.nn.functional.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest"))
        with OpRecorder() as recorder:
            got = block(x)
    assert torch.equal(got, expected)
    assert "upsample_nearest3d" not in recorder.names()


def test_ported_restore_and_align_never_run_the_missing_ops_on_mps(ported_fixture, as_mps):
    pipeline_module = importlib.import_module("latentsync.pipelines.lipsync_pipeline")
    affine = importlib.import_module("latentsync.utils.affine_transform")
    tree_helper = importlib.import_module("latentsync._lsync_port")
    as_mps(tree_helper)
    restorer = affine.AlignRestore(resolution=32, device="cpu")
    landmarks = torch.tensor([[9.0, 11.0], [22.0, 11.0], [16.0, 19.0]])
    pipeline = pipeline_module.LipsyncPipeline.__new__(pipeline_module.LipsyncPipeline)
    pipeline.image_processor = type("Processor", (), {"restorer": restorer})()
    faces = torch.rand(2, 3, 32, 32) * 2 - 1
    frames = [torch.randint(0, 255, (40, 40, 3), dtype=torch.uint8).numpy() for _ in range(2)]
    tree_helper.antialiased_resize(faces[:1], (32, 32), "bicubic")  # weights: once, on the CPU
    with OpRecorder() as recorder:
        matrix = restorer.transformation_from_points(landmarks, restorer.template)
        restored = pipeline.restore_video(faces, frames, [[0, 0, 32, 32]] * 2, [matrix, matrix])
    assert restored.shape == (2, 40, 40, 3)
    assert not recorder.names() & MISSING_ON_OLD_MPS, recorder.names() & MISSING_ON_OLD_MPS
