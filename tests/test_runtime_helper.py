"""The module written into a ported tree: device choice, dtype policy, backend-neutral calls."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="the runtime helper is exercised with the verify extra (torch) installed")

from latentsync_mps.payload.runtime import _lsync_port as helper  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(helper.DEVICE_ENV, raising=False)
    monkeypatch.delenv(helper.DTYPE_ENV, raising=False)
    monkeypatch.setattr(sys, helper._ANNOUNCED_FLAG, True, raising=False)  # the start-up line: its own tests


def fake_backends(monkeypatch, mps=False, cuda=False, capability=(8, 0)):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)


def test_device_prefers_mps_then_cuda_then_cpu(monkeypatch):
    fake_backends(monkeypatch)
    assert helper.device() == "cpu"
    fake_backends(monkeypatch, cuda=True)
    assert helper.device() == "cuda"
    assert helper.device("cuda:1") == "cuda:1"
    fake_backends(monkeypatch, mps=True, cuda=True)
    assert helper.device() == "mps"
    assert helper.device("cuda:1") == "mps"


def test_device_environment_override(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    monkeypatch.setenv(helper.DEVICE_ENV, "CPU")
    assert helper.device() == "cpu"
    monkeypatch.setenv(helper.DEVICE_ENV, "auto")
    assert helper.device() == "mps"


@pytest.mark.parametrize("value", ["cuda:0", "cuda:1", "CUDA:12"])
def test_device_environment_accepts_a_cuda_index(monkeypatch, value):
    """LATENTSYNC_DEVICE=cuda:N picks one NVIDIA GPU of several (VALID_DEVICES offers it)."""
    fake_backends(monkeypatch, cuda=True)
    monkeypatch.setenv(helper.DEVICE_ENV, value)
    assert helper.device() == value.lower()
    assert helper.device_type() == "cuda"
    assert helper.onnx_ctx_id() == int(value.split(":")[1])


def fake_mps_memory(monkeypatch, gib):
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: int(gib * 2**30), raising=False)


# What apply writes beside the helper for LatentSync 1.6 (memory_figures.py), in GiB.
FIGURES_16 = {
    "release": "1.6",
    "resolution": 512,
    "frames": 16,
    "mps": [
        {"dtype": "float16", "chunking": True, "peak_bytes": int(7.0 * 2**30)},
        {"dtype": "float32", "chunking": True, "peak_bytes": int(13.86 * 2**30)},
        {"dtype": "float32", "chunking": False, "peak_bytes": int(25.71 * 2**30)},
    ],
}


def test_dtype_policy(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    monkeypatch.setattr(helper, "memory_figures", lambda: None)  # no forecast: upstream's published figure
    fake_mps_memory(monkeypatch, 10.7)  # a 16 GB Mac's recommended working set
    assert helper.dtype() == torch.float16
    fake_mps_memory(monkeypatch, 48.0)  # a 64 GB Mac: float32 fits (twice upstream's 18 GB fp16 minimum)
    assert helper.dtype() == torch.float32 and not helper.fp16_supported()
    assert helper.dtype("cpu") == torch.float32
    fake_backends(monkeypatch, cuda=True, capability=(8, 6))
    assert helper.dtype() == torch.float16 and helper.fp16_supported()
    fake_backends(monkeypatch, cuda=True, capability=(7, 5))
    assert helper.dtype() == torch.float32 and not helper.fp16_supported()  # upstream's own gate


@pytest.mark.parametrize(
    ("gib", "chunking", "expected"),
    [
        (10.7, "1", "float16"),  # 16 GB Mac: under float32's 13.9 GiB
        (13.8, "1", "float16"),  # just under
        (13.9, "1", "float32"),  # just over: the forecast decides, not the published 36 GiB
        (21.3, "1", "float32"),  # 32 GB Mac
        (21.3, "0", "float16"),  # chunking off: float32 peaks at 25.7 GiB
        (26.0, "0", "float32"),
    ],
)
def test_dtype_policy_follows_the_release_forecast(monkeypatch, gib, chunking, expected):
    fake_backends(monkeypatch, mps=True)
    monkeypatch.setattr(helper, "memory_figures", lambda: FIGURES_16)
    monkeypatch.setenv(helper.CHUNKING_ENV, chunking)
    fake_mps_memory(monkeypatch, gib)
    value, why = helper._choose_dtype()
    assert value == getattr(torch, expected)
    need = "25.7" if chunking == "0" else "13.9"
    side = "within" if expected == "float32" else "over"
    assert why == (
        f"mps: float32 needs {need} GiB (forecast peak of LatentSync 1.6 at 512 px, 16 frames, chunking "
        f"{'off' if chunking == '0' else 'on'}), {side} the recommended working set of {gib:.1f} GiB"
    )


def test_the_figures_apply_writes_are_the_ones_the_helper_reads(fixture_tree, pack):
    """apply writes the release's shipped forecast beside the helper; the tree's own helper reads
    it (lsync-port is not installed there); revert removes it. 1.0 has no shipped forecast."""
    import importlib.util

    from latentsync_mps.pack.memory_figures import DATA_NAME
    from latentsync_mps.port import transaction
    from latentsync_mps.port.planning import make_plan

    assert DATA_NAME == helper.MEMORY_FIGURES
    transaction.commit(make_plan(fixture_tree, pack))
    written = fixture_tree / "latentsync" / DATA_NAME
    spec = importlib.util.spec_from_file_location("tree_helper", fixture_tree / "latentsync/_lsync_port.py")
    tree_helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tree_helper)
    figures = tree_helper.memory_figures()
    assert (figures["release"], figures["resolution"], figures["frames"]) == ("1.6", 512, 16)
    need, basis = tree_helper.float32_need()
    assert 13 * 2**30 < need < 15 * 2**30 and "LatentSync 1.6" in basis
    assert make_plan(fixture_tree, pack).writes == []  # a second apply changes nothing
    transaction.revert(fixture_tree)
    assert not written.exists()


@pytest.mark.parametrize("value", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("machine", ["mps-small", "mps-large", "cuda", "cpu"])
def test_dtype_environment_override_wins_everywhere(monkeypatch, value, machine):
    fake_backends(monkeypatch, mps=machine.startswith("mps"), cuda=machine == "cuda", capability=(7, 0))
    fake_mps_memory(monkeypatch, 10.7 if machine == "mps-small" else 64)
    monkeypatch.setenv(helper.DTYPE_ENV, value)
    assert helper.dtype() == getattr(torch, value)
    assert helper.fp16_supported() == (value == "float16")


def test_dtype_environment_aliases(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    monkeypatch.setenv(helper.DTYPE_ENV, "fp32")
    assert helper.dtype() == torch.float32
    monkeypatch.setenv(helper.DTYPE_ENV, "BF16")
    assert helper.dtype() == torch.bfloat16


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "LATENTSYNC_DTYPE",
            "float8",
            "LATENTSYNC_DTYPE='float8' is not a dtype: use one of float16, bfloat16, float32",
        ),
        (
            "LATENTSYNC_DEVICE",
            "gpu",
            "LATENTSYNC_DEVICE='gpu' is not a device: use one of auto, mps, cuda, cuda:N, cpu",
        ),
        ("LATENTSYNC_DEVICE", "cuda:x", "LATENTSYNC_DEVICE='cuda:x' is not a device"),
        ("LATENTSYNC_DEVICE", "mps:0", "LATENTSYNC_DEVICE='mps:0' is not a device"),
    ],
)
def test_invalid_settings_are_one_clear_error(monkeypatch, variable, value, message):
    fake_backends(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(helper.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        helper.dtype()
    assert issubclass(helper.ConfigError, ValueError)  # ComfyUI shows a ValueError as the node's error
    if variable == helper.DEVICE_ENV:
        with pytest.raises(helper.ConfigError, match="is not a device"):
            helper.device()


def test_the_forecast_s_meta_device_is_accepted(monkeypatch):
    """`lsync-port forecast` runs the tree with LATENTSYNC_DEVICE=meta (shape only); "meta:0" is not one."""
    fake_backends(monkeypatch)
    monkeypatch.setenv(helper.DEVICE_ENV, "meta")
    assert helper.device() == "meta" and helper.device_type() == "meta"
    monkeypatch.setenv(helper.DEVICE_ENV, "meta:0")
    with pytest.raises(helper.ConfigError, match="is not a device"):
        helper.device()


def test_config_error_left_uncaught_prints_one_line(capsys):
    helper._excepthook(helper.ConfigError, helper.ConfigError("LATENTSYNC_DTYPE='x' is not a dtype"), None)
    assert capsys.readouterr().err == "error: LATENTSYNC_DTYPE='x' is not a dtype\n"
    seen = []
    helper._excepthook(KeyError, KeyError("k"), None, previous=lambda *a: seen.append(a[0]))
    assert seen == [KeyError]  # anything else goes to the previous hook


def test_the_choice_is_printed_once_per_process(monkeypatch, capsys):
    fake_backends(monkeypatch, mps=True)
    fake_mps_memory(monkeypatch, 10.7)
    monkeypatch.setattr(helper, "memory_figures", lambda: FIGURES_16)
    monkeypatch.delattr(sys, helper._ANNOUNCED_FLAG, raising=False)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    helper.device()
    helper.dtype()
    helper.device()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(
        "lsync-port: device mps (auto: Apple GPU); dtype float16 (mps: float32 needs 13.9 GiB (forecast peak of "
        "LatentSync 1.6 at 512 px, 16 frames, chunking on), over the recommended working set of 10.7 GiB)"
    )
    assert "attention/VAE chunking on, 1024 MiB pieces" in line and "PYTORCH_ENABLE_MPS_FALLBACK=1" in line


def test_the_start_up_line_says_why_on_cpu(monkeypatch, capsys):
    fake_backends(monkeypatch)
    monkeypatch.delattr(sys, helper._ANNOUNCED_FLAG, raising=False)
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    monkeypatch.setenv(helper.DTYPE_ENV, "bfloat16")
    monkeypatch.setenv(helper.CHUNKING_ENV, "0")
    helper.dtype()
    assert capsys.readouterr().err == (
        "lsync-port: device cpu (auto: no GPU); dtype bfloat16 (LATENTSYNC_DTYPE=bfloat16); "
        "attention/VAE chunking off (LATENTSYNC_MPS_CHUNKING=0); PYTORCH_ENABLE_MPS_FALLBACK unset\n"
    )


def test_face_device_is_the_pipelines_own():
    assert helper.face_device(torch.device("cpu")) == "cpu"
    assert helper.face_device(torch.device("mps", 0)) == "mps"
    assert helper.face_device(torch.device("cuda", 1)) == "cuda:1"
    assert helper.face_device("cuda") == "cuda"


def test_chunk_memory_is_released_on_mps_only(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    calls = []
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("mps"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cuda"))
    kept = torch.ones(2)
    assert helper.release_chunk_memory(kept) is kept and calls == []  # a CPU tensor: nothing to free
    assert helper.join_chunks([kept, kept]).shape == (4,)  # chunks that never moved: torch.cat
    monkeypatch.setattr(helper, "_on_mps", lambda tensor: True)
    host = helper.release_chunk_memory(kept)
    assert calls == ["mps"] and torch.equal(host, kept) and host.device.type == "cpu"
    assert getattr(host, helper._CHUNK_DEVICE) == "cpu"  # where it came from (mps on a Mac)


def test_joined_chunks_stay_on_the_host_and_come_back_one_frame_at_a_time(monkeypatch):
    chunks = [torch.arange(6.0).reshape(2, 3), torch.arange(6.0, 9.0).reshape(1, 3)]
    for chunk in chunks:
        setattr(chunk, helper._CHUNK_DEVICE, "meta")  # a device that is not the host's, as mps is
    frames = helper.join_chunks(chunks)
    assert isinstance(frames, helper.HostFrames) and frames.frames.device.type == "cpu"
    assert len(frames) == 3 and frames.shape == (3, 3) and frames.dtype == torch.float32
    assert [f.device.type for f in frames] == ["meta"] * 3  # each frame on the device when read
    assert frames[2].device.type == "meta" and frames[2].shape == (3,)
    assert isinstance(frames[:2], helper.HostFrames) and len(frames[:2]) == 2
    assert torch.equal(frames.frames, torch.arange(9.0).reshape(3, 3))


def test_onnx_providers_are_filtered_by_what_onnxruntime_offers(monkeypatch):
    fake = types.ModuleType("onnxruntime")
    fake.get_available_providers = lambda: ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    assert helper.onnx_providers("mps") == ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert helper.onnx_providers("cuda") == ["CPUExecutionProvider"]
    assert helper.onnx_providers("cpu") == ["CPUExecutionProvider"]
    fake.get_available_providers = lambda: ["CPUExecutionProvider"]
    assert helper.onnx_providers("mps") == ["CPUExecutionProvider"]


def test_onnx_ctx_id():
    assert helper.onnx_ctx_id("cuda") == 0
    assert helper.onnx_ctx_id("cuda:2") == 2
    assert helper.onnx_ctx_id("mps") == 0
    assert helper.onnx_ctx_id("cpu") == -1


def test_backend_calls_are_safe_where_the_backend_is_absent(monkeypatch):
    fake_backends(monkeypatch)
    monkeypatch.setenv(helper.DEVICE_ENV, "mps")  # asked for, but this machine has no MPS
    helper.empty_cache()
    helper.synchronize()
    helper.manual_seed(3)
    helper.set_device(0)
    helper.set_memory_fraction(0.5)
    assert helper.total_memory() == 0
    assert helper.device_count() == 0
    assert helper.current_device() == 0


def test_autocast_is_off_on_cpu(monkeypatch):
    fake_backends(monkeypatch)
    with helper.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    # The same call on an enabled backend does cast (so the check above can fail).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_empty_cache_reaches_the_cuda_backend(monkeypatch):
    fake_backends(monkeypatch, cuda=True)
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cuda"))
    helper.empty_cache()
    assert calls == ["cuda"]


def test_helper_written_into_a_tree_is_this_module(fixture_tree, pack):
    from latentsync_mps.pack.paths import runtime_helper_source
    from latentsync_mps.port import transaction
    from latentsync_mps.port.planning import make_plan

    transaction.commit(make_plan(fixture_tree, pack))
    assert (fixture_tree / "latentsync/_lsync_port.py").read_text() == runtime_helper_source()
    assert runtime_helper_source() == open(helper.__file__).read()
