"""Issue 12 on every release fixture, ported: LATENTSYNC_DTYPE holds end to end, nothing is decided
when a module is imported, face work follows the pipeline's device, MPS's cache is emptied between
chunks, and bad settings stop with one clear line.

The ported trees' own modules are imported here with their heavy constructors (diffusers, whisper,
the UNet) replaced by recorders: what is checked is which dtype and device the tree's code passes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

torch = pytest.importorskip("torch", reason="the ported trees are exercised with the verify extra (torch) installed")

from latentsync_mps.port.planning import make_plan  # noqa: E402
from latentsync_mps.port.transaction import commit  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
RELEASES = {
    "1.0": "latentsync-1.0",
    "1.5": "latentsync-1.5",
    "1.6": "latentsync",
    "wrapper": "comfyui-latentsyncwrapper",
}
DTYPES = ("float16", "bfloat16", "float32")


@pytest.fixture(scope="module")
def ported_trees(tmp_path_factory, pack):
    trees = {}
    for name, folder in RELEASES.items():
        tree = tmp_path_factory.mktemp(name.replace(".", "_")) / folder
        shutil.copytree(FIXTURES / folder, tree)
        commit(make_plan(tree, pack))
        trees[name] = tree
    return trees


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # a module object without a spec: a stand-in another test left in sys.modules
        return sys.modules.get(name) is not None


@pytest.fixture
def tree_modules(ported_trees, monkeypatch):
    """import_from(release, module): a ported tree's module; the tree's modules are dropped afterwards."""
    monkeypatch.delenv("LATENTSYNC_DEVICE", raising=False)
    monkeypatch.delenv("LATENTSYNC_DTYPE", raising=False)
    monkeypatch.setattr(sys, "_lsync_port_announced", True, raising=False)
    missing = [n for n in ("face_alignment", "mediapipe", "insightface") if not _importable(n)]
    for name in missing + (["insightface.app"] if "insightface" in missing else []):  # the trees' own, not ours
        monkeypatch.setitem(sys.modules, name, mock.MagicMock())
    added: list[str] = []

    def forget():
        for name in [m for m in sys.modules if m.split(".")[0] in ("latentsync", "scripts", "gradio_app")]:
            del sys.modules[name]
        for path in added:
            sys.path.remove(path)
        added.clear()

    def import_from(release, module):
        forget()
        sys.path.insert(0, str(ported_trees[release]))
        added.append(str(ported_trees[release]))
        return importlib.import_module(module)

    yield import_from
    forget()


class Recorder:
    """Stands in for every heavy class: records dtypes and devices, and is its own model."""

    def __init__(self, seen, name="model"):
        self.seen, self.name = seen, name
        self.config = types.SimpleNamespace()  # the wrapper's script sets the VAE's scaling factor

    def __call__(self, *args, **kwargs):
        if "weight_dtype" in kwargs:
            self.seen["pipeline"] = kwargs["weight_dtype"]
        return self

    def __iter__(self):  # `unet, _ = UNet3DConditionModel.from_pretrained(...)` (1.6)
        return iter((self, None))

    def to(self, *args, dtype=None, **kwargs):
        if dtype is not None or (args and isinstance(args[0], torch.dtype)):
            self.seen[self.name] = dtype if dtype is not None else args[0]
        return self


def stub_inference(module, seen):
    """Replace scripts/inference.py's heavy names by recorders."""

    def vae_from_pretrained(*args, torch_dtype=None, **kwargs):
        seen["vae"] = torch_dtype
        return Recorder(seen, "vae")

    module.AutoencoderKL = mock.Mock(side_effect=lambda *a, **k: Recorder(seen, "vae"))
    module.AutoencoderKL.from_pretrained = vae_from_pretrained
    module.DDIMScheduler = mock.MagicMock()
    module.Audio2Feature = mock.MagicMock()
    module.UNet3DConditionModel = types.SimpleNamespace(from_pretrained=lambda *a, **k: Recorder(seen, "unet"))
    module.LipsyncPipeline = lambda *a, **k: Recorder(seen, "pipeline-object")
    if hasattr(module, "OmegaConf"):
        module.OmegaConf = types.SimpleNamespace(to_container=lambda c: {})


def run_main(release, module):
    config, args = mock.MagicMock(), mock.MagicMock(seed=1)
    if release == "1.5":
        module.main(config, "video.mp4", "audio.wav", "out.mp4")
    else:
        module.main(config, args)


@pytest.mark.parametrize("release", RELEASES)
def test_latentsync_dtype_holds_end_to_end(tree_modules, monkeypatch, release):
    """Set after the modules are imported (as ComfyUI or a notebook does), each value reaches the
    VAE, the UNet and the pipeline's weight_dtype. Before the port decided it, bfloat16 gave float32."""
    inference = tree_modules(release, "scripts.inference")
    for value in DTYPES:
        monkeypatch.setenv("LATENTSYNC_DTYPE", value)
        seen: dict = {}
        stub_inference(inference, seen)
        run_main(release, inference)
        expected = getattr(torch, value)
        assert seen.get("vae") == expected and seen.get("unet") == expected, (release, value, seen)
        assert seen.get("pipeline") == expected, (release, value, seen)


def test_the_gradio_app_goes_through_the_same_choice(tree_modules, monkeypatch):
    gradio_app = tree_modules("1.6", "gradio_app")
    main, args = gradio_app.process("video.mp4", "audio.wav", "out.mp4")
    inference = sys.modules["scripts.inference"]
    assert main is inference.main
    monkeypatch.setenv("LATENTSYNC_DTYPE", "bfloat16")
    seen: dict = {}
    stub_inference(inference, seen)
    main(mock.MagicMock(), args)
    assert seen["pipeline"] == seen["vae"] == torch.bfloat16


def make_pipeline(module, release):
    """A fixture pipeline whose UNet lives on the CPU (the parts each release's pipeline takes)."""
    import inspect

    unet = torch.nn.Linear(1, 1)
    vae = types.SimpleNamespace(config=types.SimpleNamespace(block_out_channels=[1, 2, 3, 4], scaling_factor=1.0))
    parts = {"vae": vae, "unet": unet, "denoising_unet": unet}
    names = list(inspect.signature(module.LipsyncPipeline.__init__).parameters)[1:]
    return module.LipsyncPipeline(**{name: parts.get(name) for name in names})


def call_pipeline(pipeline, release):
    return pipeline("video.mp4", "audio.wav", "out.mp4", height=64)


def stop_before_the_work(module, monkeypatch):
    """Whatever a pipeline call does before building its ImageProcessor costs nothing, and the call
    stops there (raising Stop)."""
    monkeypatch.setattr(module, "check_ffmpeg_installed", lambda: None, raising=False)
    monkeypatch.setattr(module, "load_fixed_mask", lambda *a, **k: None, raising=False)


class Stop(Exception):
    pass


@pytest.mark.parametrize("release", RELEASES)
def test_face_work_follows_the_pipelines_device(tree_modules, monkeypatch, release):
    """The global choice says mps, the pipeline runs on the cpu: its face detector and warp do too."""
    module = tree_modules(release, "latentsync.pipelines.lipsync_pipeline")
    monkeypatch.setenv("LATENTSYNC_DEVICE", "mps")
    devices = []

    def processor(*args, device=None, **kwargs):
        devices.append(device)
        raise Stop

    monkeypatch.setattr(module, "ImageProcessor", processor)
    stop_before_the_work(module, monkeypatch)
    with pytest.raises(Stop):
        call_pipeline(make_pipeline(module, release), release)
    assert devices == ["cpu"]


@pytest.mark.parametrize("release", RELEASES)
def test_defaults_are_decided_when_called_not_when_imported(tree_modules, monkeypatch, release):
    """weight_dtype, the face detector's device and AlignRestore's dtype: importing first and
    setting the environment afterwards still counts."""
    module = tree_modules(release, "latentsync.pipelines.lipsync_pipeline")
    import inspect

    assert inspect.signature(module.LipsyncPipeline.__call__).parameters["weight_dtype"].default is None
    # Called after LATENTSYNC_DTYPE is set, the pipeline decides its weight_dtype then, from it.
    tree_helper = sys.modules["latentsync._lsync_port"]
    decided = []
    real_dtype = tree_helper.dtype
    monkeypatch.setattr(tree_helper, "dtype", lambda *a, **k: decided.append(real_dtype(*a, **k)) or decided[-1])

    def processor(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(module, "ImageProcessor", processor)
    stop_before_the_work(module, monkeypatch)
    monkeypatch.setenv("LATENTSYNC_DTYPE", "bfloat16")
    with pytest.raises(Stop):
        call_pipeline(make_pipeline(module, release), release)
    assert decided == [torch.bfloat16]
    if release in ("1.6", "wrapper"):
        affine = importlib.import_module("latentsync.utils.affine_transform")
        assert affine.AlignRestore(device="cpu").dtype == torch.float32
        tree_helper = importlib.import_module("latentsync._lsync_port")
        monkeypatch.setattr(
            tree_helper, "device_type", lambda dev=None: "cuda" if str(dev).startswith("cuda") else "cpu"
        )
        assert affine.AlignRestore.__init__.__defaults__[-1] is None
        detector = importlib.import_module("latentsync.utils.face_detector")
        assert inspect.signature(detector.FaceDetector.__init__).parameters["device"].default is None


# The 1.6 fixture (and the wrapper's, which vendors it) decodes its chunks inline in __call__: the
# same rewrite, checked there by the rule's examples and by verify.
@pytest.mark.parametrize("release", ["1.0", "1.5"])
def test_mps_cache_is_emptied_after_every_chunk(tree_modules, monkeypatch, release):
    module = tree_modules(release, "latentsync.pipelines.lipsync_pipeline")
    tree_helper = sys.modules["latentsync._lsync_port"]
    calls = []
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("mps"))
    pipeline = make_pipeline(module, release)
    monkeypatch.setattr(pipeline, "decode_latents", lambda latents: latents * 2, raising=False)
    latents = torch.zeros(1, 4, 48, 2, 2)
    assert pipeline.denoise_chunks(latents, 3, 16).shape == (3, 4, 16, 2, 2) and calls == []  # on the cpu: nothing
    monkeypatch.setattr(tree_helper, "_on_mps", lambda tensor: True)
    pipeline.denoise_chunks(latents, 3, 16)
    assert calls == ["mps"] * 3


# -- in a child process: the start-up line and bad settings ---------------------------------------


def run_in(tree, code, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSYNC_")}
    environment.update(env, PYTHONPATH=str(tree))
    return subprocess.run(
        [sys.executable, *code], cwd=tree, env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_choice_is_printed_once_at_start_up(ported_trees):
    code = ["-c", "from latentsync import _lsync_port as h; h.device(); h.dtype(); h.fp16_supported(); h.device()"]
    result = run_in(ported_trees["1.6"], code, LATENTSYNC_DTYPE="bfloat16")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("lsync-port: device cpu (auto: no GPU); dtype bfloat16 (LATENTSYNC_DTYPE=bfloat16)")
    assert "chunking" in lines[0] and "PYTORCH_ENABLE_MPS_FALLBACK" in lines[0]


def test_a_bad_dtype_stops_the_trees_own_entry_point_with_one_clear_line(ported_trees):
    """scripts/inference.py, run as a user runs it: one line naming the valid values, no traceback."""
    args = ["scripts/inference.py", "--video_path", "v.mp4", "--audio_path", "a.wav", "--video_out_path", "o.mp4"]
    result = run_in(ported_trees["1.6"], args, LATENTSYNC_DTYPE="half-ish")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: LATENTSYNC_DTYPE='half-ish' is not a dtype: use one of float16, bfloat16, float32 (or leave it unset)"
    ]


def test_a_bad_device_stops_with_one_clear_line(ported_trees):
    result = run_in(
        ported_trees["wrapper"],
        ["-c", "from latentsync import _lsync_port; _lsync_port.device()"],
        LATENTSYNC_DEVICE="gpu0",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: LATENTSYNC_DEVICE='gpu0' is not a device: use one of auto, mps, cuda, cuda:N, cpu (or leave it unset)"
    ]
