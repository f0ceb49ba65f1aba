"""lsync-port doctor: every check's answers from hand-made facts (a Mac's included, on Linux),
the probe run for real in this interpreter, and the command on the fixture."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.features.doctor import catalog, checks, verdicts
from latentsync_mps.features.doctor import facts as doctor_facts
from latentsync_mps.features.doctor import tree_facts as doctor_tree
from latentsync_mps.features.doctor.catalog import memory_need_gb, video_reader_wheel
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING
from latentsync_mps.host.probe import PROBE, run_probe
from latentsync_mps.pack import target_torch

GIB = 1024**3

HELPER = Path(checks.__file__).parents[2] / "payload" / "runtime" / "_lsync_port.py"
runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# Hand-made facts: what probe.py and tree.py would report on an M2 Mac and on a Linux box


def mac_facts() -> dict:
    """A MacBook with everything in place: macOS 14.2, CPython 3.11, torch 2.5.1 with MPS."""
    return {
        "tool_version": "0.1.0",
        "python": "/Users/me/ls/.venv/bin/python",
        "python_given": True,
        "helper_source": "package",
        "probe": {
            "python": {
                "executable": "/Users/me/ls/.venv/bin/python",
                "version": [3, 11, 9],
                "version_text": "3.11.9",
                "implementation": "CPython",
                "bits": 64,
            },
            "platform": {
                "system": "Darwin",
                "machine": "arm64",
                "mac_ver": "14.2",
                "rosetta": False,
                "chip": "Apple M2",
            },
            "markers": {
                "implementation_name": "cpython",
                "implementation_version": "3.11.9",
                "os_name": "posix",
                "platform_machine": "arm64",
                "platform_release": "23.2.0",
                "platform_system": "Darwin",
                "platform_version": "Darwin Kernel Version 23.2.0",
                "python_full_version": "3.11.9",
                "platform_python_implementation": "CPython",
                "python_version": "3.11",
                "sys_platform": "darwin",
            },
            "distributions": {
                "installed": {
                    "torch": "2.5.1",
                    "torchvision": "0.20.1",
                    "diffusers": "0.32.2",
                    "eva-decord": "0.6.1",
                    "onnxruntime": "1.21.0",
                    "insightface": "0.7.3",
                    "kornia": "0.8.0",
                },
                "decord_providers": ["eva-decord"],
            },
            "decord": {"ok": True, "version": "0.6.0", "file": "/x/decord/__init__.py"},
            "torch": {
                "ok": True,
                "version": "2.5.1",
                "cuda_build": None,
                "mps_built": True,
                "mps_available": True,
                "mps_macos_14": True,
                "mps_recommended_max_memory": int(21.3 * GIB),
                "cuda_available": False,
                "cuda_devices": [],
            },
            "helper": {"path": "/x/_lsync_port.py", "device": "mps", "dtype": "float16"},
            "onnxruntime": {
                "ok": True,
                "version": "1.21.0",
                "providers": ["CoreMLExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"],
            },
            "insightface": {"ok": True, "version": "0.7.3"},
            "tkinter": {"ok": True},
            "ffmpeg": {"path": "/opt/homebrew/bin/ffmpeg", "imageio_ffmpeg": None},
            "memory": {"total": 32 * GIB, "available": None, "source": "sysctl hw.memsize", "cgroup_limit": None},
            "env": {"PYTORCH_ENABLE_MPS_FALLBACK": "1"},
            "caches": {"hf_hub": "/Users/me/.cache/huggingface/hub", "torch_hub": "/Users/me/.cache/torch/hub"},
        },
        "tree": None,
        "vae": {
            "repo": "stabilityai/sd-vae-ft-mse",
            "cache": "/Users/me/.cache/huggingface/hub",
            "snapshots": [
                {"path": "/hub/snap/1", "config": True, "weights": {"diffusion_pytorch_model.safetensors": 334643268}}
            ],
        },
        "resolution": {"value": 512, "source": "test"},
    }


def linux_facts() -> dict:
    """A Linux x86_64 box without GPU, CPU-only torch (like the machine these tests run on)."""
    facts = mac_facts()
    probe = facts["probe"]
    probe["platform"] = {"system": "Linux", "machine": "x86_64", "mac_ver": None, "rosetta": None, "chip": None}
    probe["markers"].update(platform_machine="x86_64", platform_system="Linux", sys_platform="linux")
    probe["torch"].update(
        version="2.13.0+cpu", mps_built=False, mps_available=False, mps_macos_14=None, mps_recommended_max_memory=None
    )
    probe["helper"].update(device="cpu", dtype="float32")
    probe["onnxruntime"]["providers"] = ["AzureExecutionProvider", "CPUExecutionProvider"]
    probe["ffmpeg"]["path"] = "/usr/bin/ffmpeg"
    probe["memory"] = {"total": 24 * GIB, "available": 20 * GIB, "source": "/proc/meminfo", "cgroup_limit": None}
    probe["env"] = {}
    return facts


def cuda_facts() -> dict:
    facts = linux_facts()
    facts["probe"]["torch"].update(
        version="2.5.1+cu121",
        cuda_build="12.1",
        cuda_available=True,
        cuda_devices=[{"name": "NVIDIA H100", "total_memory": 80 * GIB, "capability": [9, 0]}],
    )
    facts["probe"]["helper"].update(device="cuda", dtype="float16")
    facts["probe"]["onnxruntime"]["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return facts


REQUIREMENTS_16 = """torch==2.5.1
torchvision==0.20.1
--extra-index-url https://download.pytorch.org/whl/cu121
diffusers==0.32.2
decord==0.6.0
onnxruntime-gpu==1.21.0
insightface==0.7.3
kornia==0.8.0
"""

REQUIREMENTS_16_PORTED = """torch==2.5.1
torchvision==0.20.1
diffusers==0.32.2
eva-decord==0.6.1; platform_system != "Darwin" or python_version < "3.12"
decord2; platform_system == "Darwin" and python_version >= "3.12"
onnxruntime==1.21.0
insightface==0.7.3
kornia==0.8.0
"""


def checkpoint(path, size=None, required=True, group="", repo="ByteDance/LatentSync-1.6", remote=None, **extra):
    return {
        "path": path,
        "base": "tree",
        "location": f"/t/{path}",
        "purpose": "x",
        "required": required,
        "group": group,
        "get": "" if required else "downloaded on first run",
        "repo": repo if required else "",
        "remote": remote or path.removeprefix("checkpoints/"),
        "exists": size is not None,
        "size": size,
        "lfs_pointer": False,
        "folder_exists": True,
        **extra,
    }


def tree_facts(release="1.6", patched=True) -> dict:
    """A LatentSync tree, patched by this lsync-port, with its checkpoints downloaded."""
    return {
        "path": "/t",
        "error": None,
        "profile": "latentsync",
        "release": release,
        "release_commit": "d058a61",
        "runtime_helper": "latentsync/_lsync_port.py" if patched else None,
        "status": {
            "patched": True,
            "summary": "patched",
            "tool_version": "0.1.0",
            "profile": "latentsync",
            "release": release,
            "rules": 11,
            "states": {"patched": 11},
            "changed": [],
        }
        if patched
        else {"patched": False},
        "requirements": [{"file": "requirements.txt", "text": REQUIREMENTS_16_PORTED if patched else REQUIREMENTS_16}],
        "config": {"path": "configs/unet/stage2_512.yaml", "source": "inference.sh", "resolution": 512},
        "checkpoints": [
            checkpoint("checkpoints/latentsync_unet.pt", int(4.7 * GIB)),
            checkpoint("checkpoints/whisper/tiny.pt", 75 * 1024**2),
            checkpoint(
                "checkpoints/auxiliary/models/buffalo_l/det_10g.onnx", 16 * 1024**2, required=False, group="buffalo_l"
            ),
            checkpoint(
                "checkpoints/auxiliary/models/buffalo_l/2d106det.onnx", 5 * 1024**2, required=False, group="buffalo_l"
            ),
        ],
        "turtle_import": False,
        "cpu_face_detection_refused": False,
    }


def with_tree(facts, **kwargs):
    facts["tree"] = tree_facts(**kwargs)
    return facts


def put(facts: dict, dotted: str, value) -> dict:
    """Set facts["a"]["b"]... = value for "a.b..." (a copy of nothing: the facts are fresh per test)."""
    keys = dotted.split(".")
    node = facts
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return facts


def answer(check, facts) -> verdicts.Check:
    result = check(copy.deepcopy(facts))
    assert result is not None
    assert result.status in verdicts.STATUSES
    return result


def expect(check, facts, status, *words):
    result = answer(check, facts)
    assert result.status == status, result
    text = result.detail + " | " + result.fix
    for word in words:
        assert word in text, (word, result)
    return result


# ---------------------------------------------------------------------------------------------
# platform


def test_platform_linux_is_plainly_not_a_mac():
    expect(checks.check_platform, linux_facts(), OK, "Linux x86_64: not a Mac", "MPS does not apply")


def test_platform_mac_14_apple_silicon():
    expect(checks.check_platform, mac_facts(), OK, "macOS 14.2 on arm64 (Apple M2)", "bfloat16 included")


def test_platform_mac_13_5_ok_but_no_bfloat16():
    expect(
        checks.check_platform, put(mac_facts(), "probe.platform.mac_ver", "13.5"), OK, "bfloat16 on MPS needs macOS 14"
    )


def test_platform_mac_13_1_warns_about_int64():
    expect(checks.check_platform, put(mac_facts(), "probe.platform.mac_ver", "13.1"), WARNING, "13.3", "Update macOS")


def test_platform_mac_older_than_12_3_blocks():
    expect(checks.check_platform, put(mac_facts(), "probe.platform.mac_ver", "12.1"), BLOCKER, "12.3")


def test_platform_rosetta_blocks():
    facts = put(mac_facts(), "probe.platform.rosetta", True)
    put(facts, "probe.platform.machine", "x86_64")
    expect(checks.check_platform, facts, BLOCKER, "Rosetta", "arm64 Python")


def test_platform_intel_mac_warns():
    expect(checks.check_platform, put(mac_facts(), "probe.platform.machine", "x86_64"), WARNING, "Intel Mac")


def test_platform_unknown_macos_version_warns():
    expect(checks.check_platform, put(mac_facts(), "probe.platform.mac_ver", None), WARNING, "could not be read")


# ---------------------------------------------------------------------------------------------
# python (against the video reader's wheels)


def _py(facts, minor):
    put(facts, "probe.python.version", [3, minor, 1])
    put(facts, "probe.python.version_text", f"3.{minor}.1")
    return facts


def test_python_3_11_on_mac_uses_eva_decord():
    expect(checks.check_python, mac_facts(), OK, "eva-decord 0.6.1 has macOS arm64 wheels for CPython 3.8-3.11")


def test_python_3_12_on_macos_14_uses_decord2():
    expect(checks.check_python, _py(mac_facts(), 12), OK, "decord2 covers 3.10-3.14")


def test_python_3_12_on_macos_13_has_no_video_reader():
    facts = put(_py(mac_facts(), 12), "probe.platform.mac_ver", "13.5")
    put(facts, "probe.decord", {"ok": False, "error": "ModuleNotFoundError: No module named 'decord'"})
    expect(checks.check_python, facts, BLOCKER, "decord2's wheels need macOS 14", "CPython 3.11")


def test_python_without_wheel_but_decord_built_from_source_is_ok():
    facts = put(_py(mac_facts(), 12), "probe.platform.mac_ver", "13.5")
    expect(checks.check_python, facts, OK, "built from source")


def test_python_3_15_on_mac_blocks():
    facts = put(_py(mac_facts(), 15), "probe.decord", {"ok": False, "error": "ModuleNotFoundError: x"})
    expect(checks.check_python, facts, BLOCKER, "no decord wheel for CPython 3.15")


def test_python_linux_x86_64_any_cpython():
    expect(checks.check_python, linux_facts(), OK, "manylinux x86_64")


def test_python_linux_aarch64_warns():
    facts = put(linux_facts(), "probe.platform.machine", "aarch64")
    put(facts, "probe.decord", {"ok": False, "error": "ModuleNotFoundError: x"})
    expect(checks.check_python, facts, WARNING, "Linux aarch64")


def test_python_too_old_blocks():
    expect(checks.check_python, _py(mac_facts(), 7), BLOCKER, "too old")


def test_python_not_cpython_warns():
    expect(checks.check_python, put(linux_facts(), "probe.python.implementation", "PyPy"), WARNING, "CPython")


def test_video_reader_table():
    assert video_reader_wheel("Darwin", "arm64", (3, 11), (13, 5))[0] == "eva-decord"
    assert video_reader_wheel("Darwin", "arm64", (3, 12), (14, 0))[0] == "decord2"
    assert video_reader_wheel("Darwin", "arm64", (3, 12), (13, 5))[0] is None
    assert video_reader_wheel("Linux", "x86_64", (3, 13), None)[0] == "eva-decord"
    assert video_reader_wheel("Windows", "AMD64", (3, 11), None)[0] == "eva-decord"


# ---------------------------------------------------------------------------------------------
# decord


def test_decord_from_eva_decord():
    expect(checks.check_decord, mac_facts(), OK, "provided by eva-decord 0.6.1")


def test_decord_from_decord2():
    facts = put(mac_facts(), "probe.distributions.decord_providers", ["decord2"])
    put(facts, "probe.distributions.installed.decord2", "3.4.0")
    expect(checks.check_decord, facts, OK, "decord2 3.4.0")


def test_plain_decord_on_linux():
    facts = put(linux_facts(), "probe.distributions.decord_providers", ["decord"])
    put(facts, "probe.distributions.installed.decord", "0.6.0")
    expect(checks.check_decord, facts, OK, "provided by decord 0.6.0")


def test_two_decord_distributions_warn():
    facts = put(mac_facts(), "probe.distributions.decord_providers", ["decord2", "eva-decord"])
    put(facts, "probe.distributions.installed.decord2", "3.4.0")
    result = expect(checks.check_decord, facts, WARNING, "overwrite each other")
    assert "uninstall -y decord2" in result.fix and "install --force-reinstall eva-decord" in result.fix


def test_decord_missing_on_mac_3_11_suggests_eva_decord():
    facts = put(mac_facts(), "probe.decord", {"ok": False, "error": "ModuleNotFoundError: No module named 'decord'"})
    expect(checks.check_decord, facts, BLOCKER, "not installed", "pip install eva-decord==0.6.1")


def test_decord_missing_on_mac_3_12_suggests_decord2():
    facts = put(
        _py(mac_facts(), 12), "probe.decord", {"ok": False, "error": "ModuleNotFoundError: No module named 'decord'"}
    )
    expect(checks.check_decord, facts, BLOCKER, "pip install decord2")


def test_decord_ctypes_error():
    error = "ArgumentError: argument 1: <class 'TypeError'>: expected LP_PyObject instance instead of py_object"
    expect(checks.check_decord, put(mac_facts(), "probe.decord", {"ok": False, "error": error}), BLOCKER, "ctypes")


def test_decord_other_import_error():
    facts = put(mac_facts(), "probe.decord", {"ok": False, "error": "OSError: libavcodec.so.58"})
    expect(checks.check_decord, facts, BLOCKER, "libavcodec", "--force-reinstall")


# ---------------------------------------------------------------------------------------------
# torch, mps, cuda


def test_torch_ok():
    expect(checks.check_torch, mac_facts(), OK, "torch 2.5.1", "no CUDA in this build")


def test_torch_missing_blocks_with_mac_hint():
    facts = put(mac_facts(), "probe.torch", {"ok": False, "error": "ModuleNotFoundError: No module named 'torch'"})
    expect(checks.check_torch, facts, BLOCKER, "does not import", "include MPS")


def test_torch_1_x_warns():
    expect(checks.check_torch, put(mac_facts(), "probe.torch.version", "1.13.1"), WARNING, "torch 2.x")


def test_mps_on_linux_is_not_available_and_says_why():
    expect(checks.check_mps, linux_facts(), OK, "MPS not available: not a Mac", "is_built() False")


def test_mps_on_linux_without_torch():
    expect(checks.check_mps, put(linux_facts(), "probe.torch", {"ok": False}), OK, "not a Mac")


def test_mps_present_on_mac():
    expect(checks.check_mps, mac_facts(), OK, "built and available", "21.3 GiB")


def test_mps_not_built_blocks():
    facts = put(mac_facts(), "probe.torch.mps_built", False)
    put(facts, "probe.torch.mps_available", False)
    expect(checks.check_mps, facts, BLOCKER, "no MPS", "--force-reinstall torch")


def test_mps_built_not_available_blocks():
    expect(checks.check_mps, put(mac_facts(), "probe.torch.mps_available", False), BLOCKER, "virtual machine")


def test_mps_not_available_under_rosetta():
    facts = put(mac_facts(), "probe.torch.mps_available", False)
    put(facts, "probe.platform.rosetta", True)
    expect(checks.check_mps, facts, BLOCKER, "Rosetta")


def test_mps_not_available_on_old_macos():
    facts = put(mac_facts(), "probe.torch.mps_available", False)
    put(facts, "probe.platform.mac_ver", "12.1")
    expect(checks.check_mps, facts, BLOCKER, "older than 12.3")


def test_mps_on_intel_mac_warns():
    facts = put(mac_facts(), "probe.torch.mps_available", False)
    put(facts, "probe.platform.machine", "x86_64")
    expect(checks.check_mps, facts, WARNING, "Intel Mac")


def test_mps_unknown_without_torch_on_mac():
    expect(checks.check_mps, put(mac_facts(), "probe.torch", {"ok": False}), WARNING, "torch does not import")


def test_probe_errors_read_as_unknown():
    facts = put(mac_facts(), "probe.torch.mps_available", {"error": "RuntimeError: boom"})
    assert doctor_facts.mps_available(facts) is False
    expect(checks.check_mps, facts, BLOCKER, "is_available() None")


def test_cuda_on_mac():
    expect(checks.check_cuda, mac_facts(), OK, "no CUDA on macOS")


def test_cuda_available():
    expect(checks.check_cuda, cuda_facts(), OK, "NVIDIA H100", "80.0 GiB", "compute capability 9.0")


def test_cuda_build_without_gpu_warns():
    facts = put(linux_facts(), "probe.torch.cuda_build", "12.1")
    put(facts, "probe.env.CUDA_VISIBLE_DEVICES", "")
    expect(checks.check_cuda, facts, WARNING, "sees no GPU", "CUDA_VISIBLE_DEVICES=''")


def test_cuda_cpu_only_build():
    expect(checks.check_cuda, linux_facts(), OK, "CPU-only")


def test_cuda_without_torch_does_not_apply():
    assert checks.check_cuda(put(linux_facts(), "probe.torch", {"ok": False})) is None


# ---------------------------------------------------------------------------------------------
# device (what the runtime helper picks)


def test_device_mps():
    expect(checks.check_device, mac_facts(), OK, "picks device mps, dtype float16")


def test_device_cuda():
    expect(checks.check_device, cuda_facts(), OK, "device cuda")


def test_device_cpu_warns():
    expect(checks.check_device, linux_facts(), WARNING, "device cpu", "far slower")


def test_device_names_the_tree_helper():
    facts = linux_facts()
    facts["helper_source"] = "tree"
    expect(checks.check_device, facts, WARNING, "the tree's runtime helper")


def test_device_cpu_forced_while_mps_available():
    facts = put(mac_facts(), "probe.helper.device", "cpu")
    put(facts, "probe.env.LATENTSYNC_DEVICE", "cpu")
    expect(checks.check_device, facts, WARNING, "left unused", "Unset LATENTSYNC_DEVICE")


def test_device_mps_forced_without_mps_blocks():
    facts = put(linux_facts(), "probe.helper.device", "mps")
    put(facts, "probe.env.LATENTSYNC_DEVICE", "mps")
    expect(checks.check_device, facts, BLOCKER, "MPS is not available", "set by LATENTSYNC_DEVICE")


def test_device_cuda_forced_without_cuda_blocks():
    facts = put(linux_facts(), "probe.helper.device", "cuda:1")
    expect(checks.check_device, facts, BLOCKER, "CUDA is not available")


def test_device_bfloat16_on_macos_13_blocks():
    facts = put(mac_facts(), "probe.helper.dtype", "bfloat16")
    put(facts, "probe.platform.mac_ver", "13.5")
    expect(checks.check_device, facts, BLOCKER, "bfloat16 on MPS needs macOS 14", "LATENTSYNC_DTYPE=float16")


def test_device_bfloat16_on_macos_14_is_fine():
    expect(checks.check_device, put(mac_facts(), "probe.helper.dtype", "bfloat16"), OK, "bfloat16")


def test_device_helper_error_blocks():
    facts = put(mac_facts(), "probe.helper", {"path": "/x", "error": "SyntaxError: invalid syntax"})
    expect(checks.check_device, facts, BLOCKER, "fails here")


def test_device_bad_dtype_variable_blocks():
    facts = put(
        mac_facts(),
        "probe.helper",
        {"path": "/x", "device": "mps", "dtype_error": "ValueError: LATENTSYNC_DTYPE='fp8'"},
    )
    expect(checks.check_device, facts, BLOCKER, "dtype() raises", "LATENTSYNC_DTYPE")


def test_device_bad_device_variable_blocks():
    facts = put(mac_facts(), "probe.helper.device", "gpu")
    expect(checks.check_device, facts, BLOCKER, "not a device", "LATENTSYNC_DEVICE to mps")


def test_device_cpu_with_a_tree_that_refuses_cpu_face_detection_blocks():
    facts = with_tree(linux_facts())
    facts["tree"]["cpu_face_detection_refused"] = True
    expect(checks.check_device, facts, BLOCKER, "Using the CPU for face detection is not supported")


def test_device_without_helper_does_not_apply():
    assert checks.check_device(put(mac_facts(), "probe.helper", None)) is None


# ---------------------------------------------------------------------------------------------
# onnxruntime, insightface, ffmpeg


def test_onnxruntime_with_coreml():
    expect(checks.check_onnxruntime, mac_facts(), OK, "CoreML")


def test_onnxruntime_without_coreml_warns():
    facts = put(mac_facts(), "probe.onnxruntime.providers", ["CPUExecutionProvider"])
    expect(checks.check_onnxruntime, facts, WARNING, "no CoreMLExecutionProvider", "pip install -U onnxruntime")


def test_onnxruntime_missing_for_1_6_blocks():
    facts = with_tree(put(mac_facts(), "probe.onnxruntime", {"ok": False, "error": "ModuleNotFoundError: x"}))
    expect(checks.check_onnxruntime, facts, BLOCKER, "does not import", "onnxruntime-gpu has none for macOS")


def test_onnxruntime_missing_without_tree_warns():
    facts = put(mac_facts(), "probe.onnxruntime", {"ok": False, "error": "ModuleNotFoundError: x"})
    expect(checks.check_onnxruntime, facts, WARNING, "LatentSync 1.6+")


def test_onnxruntime_not_needed_by_1_5():
    facts = with_tree(put(mac_facts(), "probe.onnxruntime", {"ok": False}), release="1.5")
    expect(checks.check_onnxruntime, facts, OK, "not used by LatentSync 1.5")


def test_onnxruntime_and_onnxruntime_gpu_both_installed_warn():
    facts = put(cuda_facts(), "probe.distributions.installed.onnxruntime-gpu", "1.21.0")
    expect(checks.check_onnxruntime, facts, WARNING, "both onnxruntime and onnxruntime-gpu")


def test_onnxruntime_on_cuda_without_cuda_provider_warns():
    facts = put(cuda_facts(), "probe.onnxruntime.providers", ["CPUExecutionProvider"])
    expect(checks.check_onnxruntime, facts, WARNING, "no CUDAExecutionProvider", "onnxruntime-gpu")


def test_onnxruntime_on_linux_cpu():
    expect(checks.check_onnxruntime, linux_facts(), OK, "CPUExecutionProvider")


def test_insightface_ok():
    expect(checks.check_insightface, mac_facts(), OK, "insightface 0.7.3 imports")


def test_insightface_missing_for_1_6_blocks_with_compiler_hint():
    error = "ModuleNotFoundError: No module named 'insightface'"
    facts = with_tree(put(mac_facts(), "probe.insightface", {"ok": False, "error": error}))
    expect(checks.check_insightface, facts, BLOCKER, "detects faces", "xcode-select --install")


def test_insightface_missing_without_tree_warns():
    facts = put(linux_facts(), "probe.insightface", {"ok": False, "error": "ModuleNotFoundError: x"})
    expect(checks.check_insightface, facts, WARNING, "does not import")


def test_insightface_not_needed_by_1_0():
    expect(checks.check_insightface, with_tree(mac_facts(), release="1.0"), OK, "not used by LatentSync 1.0")


def test_ffmpeg_on_path():
    expect(checks.check_ffmpeg, mac_facts(), OK, "/opt/homebrew/bin/ffmpeg")


def test_ffmpeg_only_from_imageio_blocks_with_link_fix():
    facts = put(mac_facts(), "probe.ffmpeg", {"path": None, "imageio_ffmpeg": "/v/imageio_ffmpeg/binaries/ffmpeg-mac"})
    expect(checks.check_ffmpeg, facts, BLOCKER, "runs `ffmpeg` by name", "ln -s /v/imageio_ffmpeg/binaries/ffmpeg-mac")


def test_ffmpeg_absent_blocks():
    facts = put(mac_facts(), "probe.ffmpeg", {"path": None, "imageio_ffmpeg": None})
    expect(checks.check_ffmpeg, facts, BLOCKER, "no ffmpeg", "brew install ffmpeg")
    facts = put(linux_facts(), "probe.ffmpeg", {"path": None, "imageio_ffmpeg": None})
    expect(checks.check_ffmpeg, facts, BLOCKER, "apt-get install ffmpeg")


# ---------------------------------------------------------------------------------------------
# the tree: status, requirements, checkpoints, VAE, tkinter


def test_tree_absent_does_not_apply():
    for check in (checks.check_tree, checks.check_requirements, checks.check_checkpoints, checks.check_tkinter):
        assert check(mac_facts()) is None


def test_tree_patched_by_this_version():
    expect(checks.check_tree, with_tree(mac_facts()), OK, "release 1.6 (d058a61)", "patched by lsync-port 0.1.0")


def test_tree_not_a_latentsync_tree_blocks():
    facts = mac_facts()
    facts["tree"] = {"path": "/tmp", "error": {"message": "/tmp is not a recognised upstream tree", "exit_code": 3}}
    expect(checks.check_tree, facts, BLOCKER, "not a LatentSync tree")
    for check in (checks.check_requirements, checks.check_checkpoints):
        assert check(facts) is None
    assert doctor_facts.needs_insightface(facts) is None


def test_tree_not_patched_on_mac_blocks():
    expect(checks.check_tree, with_tree(mac_facts(), patched=False), BLOCKER, "not patched", "lsync-port apply /t")


def test_tree_not_patched_on_cuda_warns():
    expect(checks.check_tree, with_tree(cuda_facts(), patched=False), WARNING, "runs on CUDA as upstream wrote it")


def test_tree_patched_by_another_version_warns():
    facts = with_tree(mac_facts())
    facts["tree"]["status"]["tool_version"] = "0.0.9"
    expect(checks.check_tree, facts, WARNING, "lsync-port 0.0.9", "upgrades the port")


def test_tree_edited_by_hand_warns():
    facts = with_tree(mac_facts())
    facts["tree"]["status"]["changed"] = ["scripts/inference.py"]
    expect(checks.check_tree, facts, WARNING, "edited by hand", "lsync-port status /t")


def test_tree_partially_patched_blocks():
    facts = with_tree(mac_facts())
    facts["tree"]["status"]["summary"] = "partially patched (apply was interrupted): run apply to finish"
    expect(checks.check_tree, facts, BLOCKER, "partially", "lsync-port revert /t")


def test_tree_corrupt_manifest_blocks():
    facts = with_tree(mac_facts())
    facts["tree"]["status"] = {"error": "manifest.json: not JSON", "exit_code": 8}
    expect(checks.check_tree, facts, BLOCKER, "not JSON")


def test_tree_unrecognised_release():
    facts = with_tree(mac_facts())
    facts["tree"]["release"] = None
    expect(checks.check_tree, facts, OK, "release not recognised")


def test_requirements_of_a_ported_tree_are_satisfied_on_a_mac():
    result = expect(checks.check_requirements, with_tree(mac_facts()), OK, "7 for this platform", "1 skipped")
    assert "7 satisfied" in result.detail


def test_requirements_markers_pick_decord2_on_python_3_12():
    facts = with_tree(_py(mac_facts(), 12))
    facts["probe"]["markers"]["python_version"] = "3.12"
    del facts["probe"]["distributions"]["installed"]["eva-decord"]
    result = expect(checks.check_requirements, facts, WARNING, "missing: decord2", "1 skipped by their markers")
    assert "eva-decord" not in result.detail
    facts["probe"]["platform"]["mac_ver"] = "13.5"
    expect(checks.check_requirements, facts, BLOCKER, "decord2's macOS wheels need macOS 14")


def test_requirements_of_an_unported_tree_on_a_mac_block():
    result = expect(
        checks.check_requirements,
        with_tree(mac_facts(), patched=False),
        BLOCKER,
        "no wheel here",
        "onnxruntime-gpu has no macOS wheels",
        "CUDA wheel index",
        "lsync-port apply /t",
    )
    assert "decord==0.6.0 (" not in result.detail  # eva-decord provides `import decord`: satisfied


def test_requirements_decord_without_any_provider_on_a_mac_blocks():
    facts = with_tree(mac_facts(), patched=False)
    del facts["probe"]["distributions"]["installed"]["eva-decord"]
    expect(checks.check_requirements, facts, BLOCKER, "decord has no macOS arm64 wheel")


def test_requirements_missing_and_other_versions_warn():
    facts = with_tree(mac_facts())
    installed = facts["probe"]["distributions"]["installed"]
    del installed["kornia"]
    installed["torch"] = "2.6.0"
    result = expect(checks.check_requirements, facts, WARNING, "missing: kornia==0.8.0", "torch 2.6.0 (wants ==2.5.1)")
    assert result.fix.endswith("-m pip install -r /t/requirements.txt")


def test_requirements_on_linux_unported_are_installable():
    facts = with_tree(linux_facts(), patched=False)
    result = expect(checks.check_requirements, facts, WARNING, "missing: onnxruntime-gpu==1.21.0")
    assert "no wheel" not in result.detail


def test_requirements_file_absent_warns():
    facts = with_tree(mac_facts())
    facts["tree"]["requirements"] = None
    expect(checks.check_requirements, facts, WARNING, "no requirements.txt")


def test_requirements_unparsable_line_is_a_note():
    facts = with_tree(mac_facts())
    facts["tree"]["requirements"][0]["text"] += "this is not == a requirement\n"
    expect(checks.check_requirements, facts, WARNING, "cannot parse")


def test_checkpoints_present_with_sizes():
    expect(checks.check_checkpoints, with_tree(mac_facts()), OK, "latentsync_unet.pt 4.7 GiB", "tiny.pt 75.0 MiB")


def test_checkpoints_missing_block_with_one_download_command():
    facts = with_tree(mac_facts())
    for entry in facts["tree"]["checkpoints"][:2]:
        entry.update(exists=False, size=None)
    result = expect(checks.check_checkpoints, facts, BLOCKER, "missing: checkpoints/latentsync_unet.pt")
    assert result.fix == (
        "cd /t && huggingface-cli download ByteDance/LatentSync-1.6 latentsync_unet.pt whisper/tiny.pt "
        "--local-dir checkpoints"
    )


def test_checkpoints_lfs_pointer_blocks():
    facts = with_tree(mac_facts())
    facts["tree"]["checkpoints"][0].update(size=134, lfs_pointer=True)
    expect(checks.check_checkpoints, facts, BLOCKER, "Git LFS pointers")


def test_checkpoints_unknown_profile():
    facts = with_tree(mac_facts())
    facts["tree"]["checkpoints"] = None
    expect(checks.check_checkpoints, facts, OK, "no checkpoint list")


def test_face_models_present():
    expect(checks.check_face_models, with_tree(mac_facts()), OK, "buffalo_l models present", "det_10g.onnx 16.0 MiB")


def test_face_models_absent_are_downloaded_on_first_run():
    facts = with_tree(mac_facts())
    for entry in facts["tree"]["checkpoints"][2:]:
        entry.update(exists=False, size=None, folder_exists=False)
    expect(checks.check_face_models, facts, WARNING, "downloaded on first run", "offline")


def test_face_models_folder_without_models_blocks():
    facts = with_tree(mac_facts())
    facts["tree"]["checkpoints"][2].update(exists=False, size=None, folder_exists=True)
    expect(checks.check_face_models, facts, BLOCKER, "lacks det_10g.onnx", "rm -r")


def test_face_models_without_tree_do_not_apply():
    assert checks.check_face_models(mac_facts()) is None


def test_vae_in_cache():
    expect(checks.check_vae, mac_facts(), OK, "sd-vae-ft-mse in the Hugging Face cache", "319.1 MiB")


def test_vae_absent_warns():
    facts = put(mac_facts(), "vae.snapshots", [])
    expect(checks.check_vae, facts, WARNING, "downloads it on the first run", "huggingface-cli download")


def test_vae_absent_and_offline_blocks():
    facts = put(mac_facts(), "vae.snapshots", [])
    put(facts, "probe.env.HF_HUB_OFFLINE", "1")
    expect(checks.check_vae, facts, BLOCKER, "HF_HUB_OFFLINE")


def test_tkinter_for_1_0_trees():
    facts = with_tree(mac_facts(), release="1.0")
    assert checks.check_tkinter(facts) is None
    facts["tree"]["turtle_import"] = True
    expect(checks.check_tkinter, facts, OK, "tkinter imports")
    put(facts, "probe.tkinter", {"ok": False, "error": "ModuleNotFoundError: No module named '_tkinter'"})
    expect(checks.check_tkinter, facts, BLOCKER, "from turtle import forward", "Delete that line")


# ---------------------------------------------------------------------------------------------
# memory and environment


def _mac_memory(total_gib, recommended_gib, resolution=512):
    facts = put(mac_facts(), "probe.memory.total", int(total_gib * GIB))
    put(facts, "probe.torch.mps_recommended_max_memory", int(recommended_gib * GIB) if recommended_gib else None)
    return put(facts, "resolution", {"value": resolution, "source": "test"})


def test_memory_estimates():
    assert memory_need_gb(256) == 8.0
    assert memory_need_gb(512) == 18.0
    assert memory_need_gb(256, "1.0") == 6.5
    assert 8.0 < memory_need_gb(384) < 18.0
    assert memory_need_gb(1024) == 72.0


def test_memory_mac_32_gb_at_512_is_enough():
    expect(checks.check_memory, _mac_memory(32, 21.3), OK, "Metal recommends 21.3 GiB", "~18 GB for 512x512")


def test_memory_mac_16_gb_at_512_swaps():
    result = expect(checks.check_memory, _mac_memory(16, 10.7), WARNING, "expect swapping")
    assert "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES" in result.fix


def test_memory_mac_8_gb_at_512_blocks_until_the_cap_is_lifted():
    result = expect(checks.check_memory, _mac_memory(8, 5.3), BLOCKER, "MPS backend out of memory")
    assert "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0" in result.fix
    assert "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES" in result.fix
    facts = put(_mac_memory(8, 5.3), "probe.env.PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
    expect(checks.check_memory, facts, WARNING, "expect swapping")


def test_memory_mac_8_gb_at_256_is_enough():
    expect(checks.check_memory, _mac_memory(16, 10.7, resolution=256), OK, "~8 GB for 256x256")


def test_memory_mac_old_torch_compares_with_ram():
    expect(checks.check_memory, _mac_memory(32, None), OK, "torch does not report Metal's limit")


def test_memory_less_than_the_checkpoints_blocks():
    facts = with_tree(_mac_memory(4, 2.6))
    expect(checks.check_memory, facts, BLOCKER, "less than the checkpoints alone")


def test_memory_cpu_linux():
    expect(checks.check_memory, linux_facts(), OK, "24.0 GiB RAM for inference on the CPU")
    expect(checks.check_memory, put(linux_facts(), "resolution.value", 64), OK, "at most ~8 GB for 64x64")
    facts = put(linux_facts(), "probe.memory.cgroup_limit", 8 * GIB)
    expect(checks.check_memory, facts, WARNING, "cgroup limit of 8.0 GiB")


def test_memory_cuda():
    expect(checks.check_memory, cuda_facts(), OK, "GPU memory 80.0 GiB")
    facts = put(cuda_facts(), "probe.torch.cuda_devices", [{"name": "T4", "total_memory": 15 * GIB}])
    expect(checks.check_memory, facts, WARNING, "GPU memory 15.0 GiB")


def test_memory_unknown_warns():
    facts = put(linux_facts(), "probe.memory", {"error": "OSError"})
    expect(checks.check_memory, facts, WARNING, "RAM unknown")


def test_environment_on_mac_with_fallback():
    expect(checks.check_environment, mac_facts(), OK, "PYTORCH_ENABLE_MPS_FALLBACK=1")


def test_environment_on_mac_without_fallback_warns():
    facts = put(mac_facts(), "probe.env", {})
    expect(checks.check_environment, facts, WARNING, "NotImplementedError", "export PYTORCH_ENABLE_MPS_FALLBACK=1")


def test_environment_bad_values_warn():
    facts = put(mac_facts(), "probe.env.PYTORCH_MPS_HIGH_WATERMARK_RATIO", "lots")
    expect(checks.check_environment, facts, WARNING, "not a number")
    facts = put(mac_facts(), "probe.env.LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES", "256MB")
    expect(checks.check_environment, facts, WARNING, "not a positive number of bytes")


def test_environment_cap_off_is_said():
    facts = put(mac_facts(), "probe.env.PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
    expect(checks.check_environment, facts, OK, "cap is off")


def test_environment_on_linux():
    expect(checks.check_environment, linux_facts(), OK, "none of")
    facts = put(linux_facts(), "probe.env.LATENTSYNC_DEVICE", "cpu")
    # The device row judges it (one verdict per fact): this row points there.
    expect(checks.check_environment, facts, OK, "LATENTSYNC_DEVICE: see the device row")


# ---------------------------------------------------------------------------------------------
# The whole table


def test_a_good_mac_has_no_blocker_and_no_warning():
    facts = with_tree(mac_facts())
    results = checks.diagnose(facts)
    assert {c.status for c in results} == {OK}, [c for c in results if c.status != OK]
    assert [c.name for c in results] == [
        "platform",
        "python",
        "decord",
        "torch",
        "mps",
        "cuda",
        "device",
        "onnxruntime",
        "insightface",
        "ffmpeg",
        "tree",
        "requirements",
        "checkpoints",
        "face-models",
        "vae",
        "memory",
        "environment",
    ]


def test_a_failed_probe_reports_only_what_is_known():
    facts = {"python": "/bin/false", "probe": {}, "probe_error": "the probe exited with 1", "tree": None}
    results = checks.diagnose(facts)
    assert [(c.name, c.status) for c in results] == [("interpreter", BLOCKER)]


def test_checks_survive_empty_facts():
    """A probe that could answer nothing must not crash a check."""
    facts = {"probe": {}, "tree": None}
    for check in checks.CHECKS:
        result = check(facts)
        assert result is None or result.status in verdicts.STATUSES


# ---------------------------------------------------------------------------------------------
# The probe, for real, here


def test_probe_is_standalone_and_old_python_compatible():
    source = PROBE.read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert "latentsync_mps" not in imported
    assert imported <= {
        "json",
        "os",
        "platform",
        "shutil",
        "subprocess",
        "sys",
        "importlib",
        "torch",
        "imageio_ffmpeg",
        "onnxruntime",
    }


def test_probe_here_reports_honestly(monkeypatch):
    for name in ("LATENTSYNC_DEVICE", "LATENTSYNC_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    facts, error = run_probe(sys.executable, HELPER)
    assert error is None
    # Every fact that this process can check for itself is this machine's.
    torch = pytest.importorskip("torch", reason="the probe's torch facts are checked with the verify extra")
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg comes with the verify extra")
    assert facts["ffmpeg"]["path"] == shutil.which("ffmpeg")
    assert facts["ffmpeg"]["imageio_ffmpeg"] == imageio_ffmpeg.get_ffmpeg_exe()
    assert facts["python"]["executable"] == sys.executable
    assert facts["python"]["version"] == list(sys.version_info[:3])
    assert facts["python"]["implementation"] == platform.python_implementation()
    assert facts["markers"]["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert facts["markers"]["sys_platform"] == sys.platform
    assert (facts["platform"]["system"], facts["platform"]["machine"]) == (platform.system(), platform.machine())
    assert facts["torch"]["ok"] is True and facts["torch"]["version"] == torch.__version__
    assert facts["torch"]["cuda_build"] == torch.version.cuda
    assert facts["torch"]["mps_built"] is torch.backends.mps.is_built()
    assert facts["torch"]["mps_available"] is torch.backends.mps.is_available()
    assert facts["torch"]["cuda_available"] is torch.cuda.is_available()
    assert facts["distributions"]["installed"]["torch"] == metadata.version("torch")
    assert facts["decord"]["ok"] is (importlib.util.find_spec("decord") is not None)
    assert facts["env"]["PYTORCH_ENABLE_MPS_FALLBACK"] == "1" and facts["env"]["LATENTSYNC_DEVICE"] is None
    if sys.platform == "darwin":
        memsize = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, check=True)
        assert facts["memory"]["total"] == int(memsize.stdout)
    else:
        assert facts["memory"]["total"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    expected_device = "mps" if torch.backends.mps.is_available() else "cuda" if torch.cuda.is_available() else "cpu"
    assert facts["helper"]["device"] == expected_device
    if sys.platform == "linux":
        assert facts["platform"]["system"] == "Linux"
        assert facts["platform"]["mac_ver"] is None and facts["platform"]["chip"] is None
        assert facts["torch"]["mps_available"] is False and facts["torch"]["mps_built"] is False
    elif sys.platform == "darwin":
        assert facts["platform"]["system"] == "Darwin"
        assert facts["platform"]["mac_ver"] == platform.mac_ver()[0]
        assert facts["platform"]["rosetta"] is False  # CI's macOS runners are Apple Silicon, natively
        chip = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        assert facts["platform"]["chip"] == chip.stdout.strip() and chip.stdout.startswith("Apple")
        assert facts["torch"]["mps_built"] is True  # PyPI's macOS arm64 wheels have MPS
        assert facts["torch"]["cuda_available"] is False
    json.dumps(facts)


def _path_without_ffmpeg() -> str:
    return os.pathsep.join(
        folder for folder in os.environ.get("PATH", "").split(os.pathsep) if not shutil.which("ffmpeg", path=folder)
    )


@pytest.mark.parametrize("ffmpeg_on_path", [True, False], ids=["an-ffmpeg-on-PATH", "no-ffmpeg-on-PATH"])
def test_probe_finds_ffmpeg_exactly_where_path_has_one(tmp_path, monkeypatch, ffmpeg_on_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "ffmpeg"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    path = _path_without_ffmpeg()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{path}" if ffmpeg_on_path else path)
    facts, error = run_probe(sys.executable, None)
    assert error is None
    assert facts["ffmpeg"]["path"] == (str(fake) if ffmpeg_on_path else None)


def test_probe_runs_as_a_plain_script_and_survives_a_bad_helper(tmp_path):
    broken = tmp_path / "helper.py"
    broken.write_text("raise RuntimeError('boom')\n")
    done = subprocess.run(
        [sys.executable, str(PROBE), "--helper", str(broken)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["helper"]["error"] == "RuntimeError: boom"
    assert set(facts) >= {"python", "platform", "torch", "decord", "ffmpeg", "memory", "env"}


def test_probe_of_something_that_is_not_python():
    facts, error = run_probe("/bin/false", None)
    assert facts is None and "exited with 1" in error


def test_doctor_import_stays_light():
    code = "import sys, latentsync_mps.cli, latentsync_mps.features.doctor; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# The command


@pytest.mark.parametrize("ffmpeg_on_path", [True, False], ids=["an-ffmpeg-on-PATH", "no-ffmpeg-on-PATH"])
def test_cli_here_without_a_tree(tmp_path, monkeypatch, ffmpeg_on_path):
    """This interpreter, which scripts/test.sh set up (torch, eva-decord and imageio-ffmpeg from the
    verify extra); the one input varied is whether an `ffmpeg` is on PATH."""
    torch = pytest.importorskip("torch", reason="doctor here is checked with the verify extra installed")
    for name in ("LATENTSYNC_DEVICE", "LATENTSYNC_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    # No MPS memory cap: a Mac runner's small Metal budget is a warning then, never a blocker.
    monkeypatch.setenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ffmpeg").write_text("#!/bin/sh\nexit 0\n")
    (folder / "ffmpeg").chmod(0o755)
    path = _path_without_ffmpeg()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{path}" if ffmpeg_on_path else path)
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.output)
    by_name = {c["name"]: c for c in report["checks"]}
    blockers = {name for name, c in by_name.items() if c["status"] == BLOCKER}
    assert report["python"] == sys.executable
    # LatentSync runs `ffmpeg` by name: without one on PATH (imageio-ffmpeg's is not), a blocker.
    assert by_name["ffmpeg"]["status"] == (OK if ffmpeg_on_path else BLOCKER)
    if sys.platform == "linux":
        assert "not a Mac" in by_name["platform"]["detail"] and by_name["platform"]["status"] == OK
        assert "MPS not available" in by_name["mps"]["detail"] and by_name["mps"]["status"] == OK
        device = "cuda" if torch.cuda.is_available() else "cpu"
        assert f"picks device {device}" in by_name["device"]["detail"]
        assert blockers == (set() if ffmpeg_on_path else {"ffmpeg"})
        assert result.exit_code == (0 if ffmpeg_on_path else 10)
    elif sys.platform == "darwin":
        assert f"macOS {platform.mac_ver()[0]}" in by_name["platform"]["detail"]
        assert by_name["platform"]["status"] == OK  # an Apple Silicon runner on a current macOS
        mps = torch.backends.mps.is_available()
        if mps:
            assert "MPS built and available" in by_name["mps"]["detail"] and by_name["mps"]["status"] == OK
            assert "picks device mps" in by_name["device"]["detail"]
        else:  # hosted runners may be virtual machines without Metal: then doctor must say so
            assert by_name["mps"]["status"] == BLOCKER and "MPS is built but not available" in by_name["mps"]["detail"]
            assert "picks device cpu" in by_name["device"]["detail"]
        assert blockers == (set() if mps else {"mps"}) | (set() if ffmpeg_on_path else {"ffmpeg"})
        assert result.exit_code == (0 if mps and ffmpeg_on_path else 10)


def test_cli_table_and_exit_code_on_the_fixture(fixture_tree, monkeypatch):
    monkeypatch.delenv("LATENTSYNC_DEVICE", raising=False)
    result = runner.invoke(app, ["doctor", str(fixture_tree)])
    assert result.exit_code == 10, result.output  # not patched, no checkpoints
    for word in ("status", "platform", "requirements", "checkpoints", "blocker(s)", "lsync-port apply"):
        assert word in result.output


def test_cli_json_on_the_fixture_before_and_after_apply(fixture_tree, monkeypatch):
    monkeypatch.delenv("LATENTSYNC_DEVICE", raising=False)
    result = runner.invoke(app, ["doctor", str(fixture_tree), "--json"])
    report = json.loads(result.output)
    by_name = {c["name"]: c for c in report["checks"]}
    assert result.exit_code == 10
    assert by_name["tree"]["status"] == BLOCKER and "not patched" in by_name["tree"]["detail"]
    assert by_name["checkpoints"]["status"] == BLOCKER
    assert report["facts"]["helper_source"] == "package"

    assert runner.invoke(app, ["apply", str(fixture_tree)]).exit_code == 0
    (fixture_tree / "checkpoints" / "whisper").mkdir(parents=True)
    for rel, size in (("checkpoints/latentsync_unet.pt", 3 * 1024**2), ("checkpoints/whisper/tiny.pt", 2 * 1024**2)):
        with open(fixture_tree / rel, "wb") as handle:
            handle.truncate(size)
    result = runner.invoke(app, ["doctor", str(fixture_tree), "--json", "--resolution", "256"])
    report = json.loads(result.output)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["tree"]["status"] == OK and "patched by lsync-port" in by_name["tree"]["detail"]
    assert by_name["checkpoints"]["status"] == OK and "latentsync_unet.pt 3.0 MiB" in by_name["checkpoints"]["detail"]
    assert report["facts"]["helper_source"] == "tree"
    assert report["facts"]["probe"]["helper"]["path"] == str(fixture_tree / "latentsync" / "_lsync_port.py")
    assert report["facts"]["resolution"] == {"value": 256, "source": "--resolution"}


def test_cli_not_a_latentsync_tree_is_a_blocker(tmp_path):
    result = runner.invoke(app, ["doctor", str(tmp_path), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 10
    assert any(c["name"] == "tree" and "not a LatentSync tree" in c["detail"] for c in report["checks"])


def test_cli_usage_errors(tmp_path):
    assert runner.invoke(app, ["doctor", "--python", str(tmp_path / "nope")]).exit_code == 2
    assert runner.invoke(app, ["doctor", str(tmp_path / "nope")]).exit_code == 2
    assert runner.invoke(app, ["doctor", "--python", "no-such-python-here"]).exit_code == 2


@pytest.mark.parametrize("word", ["doctor", "10 doctor found a blocker"])
def test_help_mentions_doctor(word):
    assert word in " ".join(runner.invoke(app, ["--help"]).output.split())


# ---------------------------------------------------------------------------------------------
# Reading a tree (tree.py) and the per-release table (catalog.py)


def test_checkpoint_table_per_release():
    names = {r: [c.path for c in catalog.checkpoints("latentsync", r)] for r in ("1.0", "1.5", "1.6", "main")}
    for paths in names.values():
        assert paths[:2] == ["checkpoints/latentsync_unet.pt", "checkpoints/whisper/tiny.pt"]
    assert "checkpoints/s3fd-619a316812.pth" in names["1.0"] == names["1.5"]
    assert "checkpoints/auxiliary/models/buffalo_l/det_10g.onnx" in names["1.6"] == names["main"]
    assert catalog.checkpoints("latentsync", None) == catalog.checkpoints("latentsync", "main")
    assert catalog.checkpoints("latentsync", "1.6", "small")[1].remote == "whisper/small.pt"
    assert catalog.checkpoints("comfyui-latentsyncwrapper", "1.6") is None


def test_tree_config_from_inference_sh_or_the_script_default(tmp_path):
    (tmp_path / "configs/unet").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "configs/unet/stage2.yaml").write_text("data:\n  resolution: 256\nmodel:\n  cross_attention_dim: 384\n")
    (tmp_path / "configs/unet/stage2_512.yaml").write_text(
        "data:\n  resolution: 512\nmodel:\n  motion_module_resolutions: [1, 2]\n  cross_attention_dim: 768\n"
    )
    (tmp_path / "scripts/inference.py").write_text(
        'parser.add_argument("--unet_config_path", type=str, default="configs/unet/stage2.yaml")\n'
    )
    assert doctor_tree._config(tmp_path) == {
        "path": "configs/unet/stage2.yaml",
        "source": "scripts/inference.py",
        "exists": True,
        "resolution": 256,
        "cross_attention_dim": 384,
    }
    (tmp_path / "inference.sh").write_text(
        'python -m scripts.inference \\\n    --unet_config_path "configs/unet/stage2_512.yaml" \\\n'
    )
    config = doctor_tree._config(tmp_path)
    assert (config["source"], config["resolution"], config["cross_attention_dim"]) == ("inference.sh", 512, 768)


def test_tree_file_facts_catch_lfs_pointers(tmp_path):
    pointer = tmp_path / "latentsync_unet.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 5068877934\n")
    assert doctor_tree.file_facts(pointer)["lfs_pointer"] is True
    assert doctor_tree.file_facts(tmp_path / "absent.pt") == {
        "exists": False,
        "size": None,
        "lfs_pointer": False,
        "folder_exists": True,
    }


def test_tree_requirements_follow_includes(tmp_path):
    (tmp_path / "requirements.txt").write_text("-r requirements-base.txt\ntorch==2.5.1\n")
    (tmp_path / "requirements-base.txt").write_text("numpy\n")
    files = doctor_tree._requirements(tmp_path)
    assert [f["file"] for f in files] == ["requirements.txt", "requirements-base.txt"]


def test_vae_in_a_hugging_face_cache(tmp_path):
    snapshot = tmp_path / "models--stabilityai--sd-vae-ft-mse" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 2048)
    facts = doctor_tree.gather_vae({"hf_hub": str(tmp_path)})
    assert facts["snapshots"] == [
        {"path": str(snapshot), "config": True, "weights": {"diffusion_pytorch_model.safetensors": 2048}}
    ]
    assert doctor_tree.gather_vae({"hf_hub": str(tmp_path / "none")})["snapshots"] == []


def test_tree_facts_of_the_fixture(fixture_tree, pack):
    facts = doctor_tree.gather_tree(fixture_tree, pack, {"torch_hub": "/nowhere"})
    assert (facts["profile"], facts["release"], facts["status"]) == ("latentsync", "1.6", {"patched": False})
    assert facts["requirements"][0]["file"] == "requirements.txt"
    assert [c["path"] for c in facts["checkpoints"]][:2] == [
        "checkpoints/latentsync_unet.pt",
        "checkpoints/whisper/tiny.pt",
    ]
    assert not any(c["exists"] for c in facts["checkpoints"])


UPSTREAM_TREES = [Path(p) for p in os.environ.get("LSYNC_UPSTREAM", "").split(os.pathsep) if p]


@pytest.mark.upstream
@pytest.mark.skipif(not UPSTREAM_TREES, reason="set LSYNC_UPSTREAM to real checkouts to run this")
@pytest.mark.parametrize("tree", UPSTREAM_TREES, ids=lambda p: p.name)
def test_tree_facts_of_a_real_upstream(tree, pack):
    """Reads only: the checkout is not copied because doctor writes nothing."""
    facts = doctor_tree.gather_tree(tree, pack, None)
    release = facts["release"]
    assert facts["profile"] == "latentsync" and release in catalog.DEFAULT_RESOLUTION
    assert facts["config"]["resolution"] == catalog.DEFAULT_RESOLUTION[release]
    assert facts["config"]["cross_attention_dim"] == 384
    assert "decord==0.6.0" in facts["requirements"][0]["text"]
    assert facts["turtle_import"] is (release == "1.0")
    assert facts["cpu_face_detection_refused"] is (release in ("1.6", "main"))


# ---------------------------------------------------------------------------------------------
# The tree's target torch against the installed one (on a Mac)


def _target(facts: dict, version: str, origin: str = "requirements.txt: torch==2.5.1") -> dict:
    return put(facts, "tree", {"path": "/t", "target_torch": {"version": version, "origin": origin, "note": ""}})


def test_target_torch_installed_is_the_pin():
    expect(checks.check_target_torch, _target(mac_facts(), "2.5.1"), OK, "verdict is for this torch")


def test_target_torch_installed_newer_than_the_pin():
    facts = put(_target(mac_facts(), "2.5.1"), "probe.torch.version", "2.13.0")
    result = expect(checks.check_target_torch, facts, WARNING, "verdict was for 2.5.1", "--target-torch 2.13.0")
    assert "MPS kernels more" in result.detail and "pip install torch==2.5.1" in result.fix


def test_target_torch_installed_older_lists_the_missing_kernels():
    facts = put(_target(mac_facts(), "2.8.0", "requirements.txt: torch==2.8.0"), "probe.torch.version", "2.5.1")
    result = expect(checks.check_target_torch, facts, WARNING, "older than the target", "more)", "torch==2.8.0")
    missing = target_torch.kernels_missing("2.5.1", "2.8.0")
    assert "aten::upsample_nearest3d" in missing and f"({len(missing)}: {missing[0]}, " in result.detail


def test_target_torch_installed_without_a_table():
    facts = put(_target(mac_facts(), "2.5.1"), "probe.torch.version", "1.13.1")
    expect(checks.check_target_torch, facts, WARNING, "no MPS table for torch 1.13.1", "torch==2.5.1")


def test_target_torch_that_needs_a_newer_macos_says_so_and_names_one_that_fits():
    facts = put(_target(mac_facts(), "2.14.1", "--target-torch"), "probe.platform.mac_ver", "13.6")
    expect(
        checks.check_target_torch, facts, WARNING,
        "torch 2.14.1's macOS wheel needs macOS 14.0 or later", "this Mac runs 13.6",
        "Update macOS to 14.0", "--target-torch 2.11.0",
    )  # fmt: skip
    facts = put(_target(mac_facts(), "2.14.1", "--target-torch"), "probe.platform.mac_ver", "14.2")
    assert "needs macOS" not in answer(checks.check_target_torch, facts).detail


def test_target_torch_does_not_apply_off_a_mac():
    assert checks.check_target_torch(_target(linux_facts(), "2.5.1")) is None


def test_target_torch_is_a_tree_fact(fixture_tree, pack):
    facts = doctor_tree.gather_tree(fixture_tree, pack)
    assert facts["target_torch"]["version"] == "2.5.1"
    assert facts["target_torch"]["origin"] == "requirements.txt: torch==2.5.1"
