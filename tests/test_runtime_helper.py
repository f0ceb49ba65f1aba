"""The module written into a ported tree: device choice, dtype policy, backend-neutral calls."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="the runtime helper is exercised with the verify extra (torch) installed")

from latentsync_mps.runtime import _lsync_port as helper  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(helper.DEVICE_ENV, raising=False)
    monkeypatch.delenv(helper.DTYPE_ENV, raising=False)


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


def test_dtype_policy(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    assert helper.dtype() == torch.float16
    assert helper.dtype("cpu") == torch.float32
    fake_backends(monkeypatch, cuda=True, capability=(8, 6))
    assert helper.dtype() == torch.float16 and helper.fp16_supported()
    fake_backends(monkeypatch, cuda=True, capability=(7, 5))
    assert helper.dtype() == torch.float32 and not helper.fp16_supported()  # upstream's own gate


def test_dtype_environment_override(monkeypatch):
    fake_backends(monkeypatch, mps=True)
    monkeypatch.setenv(helper.DTYPE_ENV, "fp32")
    assert helper.dtype() == torch.float32
    monkeypatch.setenv(helper.DTYPE_ENV, "bf16")
    assert helper.dtype() == torch.bfloat16
    monkeypatch.setenv(helper.DTYPE_ENV, "float8")
    with pytest.raises(ValueError, match="LATENTSYNC_DTYPE='float8' is not one of bfloat16, float16, float32"):
        helper.dtype()


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
    from latentsync_mps import engine
    from latentsync_mps.resources import runtime_helper_source

    engine.commit(engine.make_plan(fixture_tree, pack))
    assert (fixture_tree / "latentsync/_lsync_port.py").read_text() == runtime_helper_source()
    assert runtime_helper_source() == open(helper.__file__).read()
