"""Facts about the Python interpreter that will run a LatentSync tree, printed as one JSON object.

Standalone on purpose: it imports nothing from lsync-port, so any interpreter can run it
(`/path/to/python probe.py [--helper PATH]`); `lsync-port doctor` feeds it to the chosen
interpreter on stdin. It never fails: each fact is gathered on its own and a fact that cannot be
had is recorded as None, or as an "error" string. Kept to Python 3.6 syntax, so that an old
interpreter still answers with its version instead of a SyntaxError.

Whatever the imported packages print goes to stderr; stdout carries only the JSON.

--helper PATH  a runtime helper (a patched tree's latentsync/_lsync_port.py, or lsync-port's own)
               to load and ask which device and dtype it would choose here.
"""

import json
import os
import platform
import shutil
import subprocess
import sys

PROBE_VERSION = 1

ENV_VARS = (
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
    "PYTORCH_MPS_LOW_WATERMARK_RATIO",
    "LATENTSYNC_DEVICE",
    "LATENTSYNC_DTYPE",
    "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES",
    "LATENTSYNC_MPS_CHUNKING",
    "CUDA_VISIBLE_DEVICES",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
)


def _error(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 600 else text[:600] + "..."


def guarded(function, *args):
    """The value of function(*args), or {"error": ...} when it raises anything."""
    try:
        return function(*args)
    except BaseException as exc:  # noqa: BLE001 - a probe must answer whatever happens
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"error": _error(exc)}


def _run(command, timeout=10):
    try:
        out = subprocess.run(  # text= needs Python 3.7: universal_newlines keeps 3.6
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            universal_newlines=True,  # noqa: UP021
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def python_facts():
    info = sys.version_info
    return {
        "executable": sys.executable,
        "version": [info[0], info[1], info[2]],
        "version_text": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "bits": 64 if sys.maxsize > 2**32 else 32,
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    }


def platform_facts():
    system = platform.system()
    facts = {
        "system": system,
        "machine": platform.machine(),
        "release": platform.release(),
        "platform": platform.platform(),
        "mac_ver": None,
        "rosetta": None,
        "chip": None,
    }
    if system == "Darwin":
        version = platform.mac_ver()[0]
        if not version or version.startswith("10.16"):  # an old SDK's compatibility answer
            version = _run(["sw_vers", "-productVersion"]) or version
        facts["mac_ver"] = version or None
        translated = _run(["sysctl", "-n", "sysctl.proc_translated"])
        facts["rosetta"] = translated == "1" if translated is not None else False
        facts["chip"] = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
    return facts


def marker_environment():
    """PEP 508 marker variables, computed as packaging's default_environment() does."""
    info = sys.implementation.version
    version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _canonical(name):
    out = []
    for char in name.lower():
        out.append("-" if char in "-_." else char)
    text = "".join(out)
    while "--" in text:
        text = text.replace("--", "-")
    return text


def distributions():
    """Installed distributions: canonical name -> version; and which of them install `decord`."""
    try:
        from importlib import metadata
    except ImportError:
        return {"error": "importlib.metadata needs Python 3.8+"}
    found = {}
    decord = []
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:  # noqa: BLE001
            name = None
        if not name:
            continue
        key = _canonical(name)
        found.setdefault(key, dist.version)
        if "decord" in key:
            files = dist.files or []
            if any(str(f).replace("\\", "/").startswith("decord/") for f in files):
                decord.append(key)
    return {"installed": found, "decord_providers": sorted(set(decord))}


def _import(name):
    module = __import__(name)
    return {
        "ok": True,
        "version": str(getattr(module, "__version__", "") or "") or None,
        "file": getattr(module, "__file__", None),
    }


def import_facts(name):
    result = guarded(_import, name)
    if "error" in result:
        return {"ok": False, "error": result["error"]}
    return result


def torch_facts():
    try:
        import torch
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"ok": False, "error": _error(exc)}
    facts = {"ok": True, "version": str(torch.__version__), "cuda_build": getattr(torch.version, "cuda", None)}
    mps = getattr(torch.backends, "mps", None)
    facts["mps_built"] = guarded(lambda: bool(mps is not None and mps.is_built()))
    facts["mps_available"] = guarded(lambda: bool(mps is not None and mps.is_available()))
    facts["mps_macos_14"] = None  # torch's own answer to "bfloat16 on MPS?"; it raises without MPS
    if facts["mps_available"] is True and hasattr(mps, "is_macos_or_newer"):
        facts["mps_macos_14"] = guarded(lambda: bool(mps.is_macos_or_newer(14, 0)))
    facts["mps_recommended_max_memory"] = None
    if facts["mps_available"] is True and hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
        facts["mps_recommended_max_memory"] = guarded(lambda: int(torch.mps.recommended_max_memory()))
    facts["cuda_available"] = guarded(lambda: bool(torch.cuda.is_available()))
    facts["cuda_devices"] = []
    if facts["cuda_available"] is True:

        def devices():
            out = []
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                out.append(
                    {
                        "name": props.name,
                        "total_memory": int(props.total_memory),
                        "capability": [props.major, props.minor],
                    }
                )
            return out

        facts["cuda_devices"] = guarded(devices)
    return facts


def helper_facts(path):
    """Load the runtime helper from `path` under a private name and ask it for device and dtype."""
    if not path:
        return None
    facts = {"path": path}
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_lsync_port_probe_helper", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        facts["error"] = _error(exc)
        return facts
    device = guarded(module.device)
    if isinstance(device, dict):
        facts["error"] = device["error"]
        return facts
    facts["device"] = str(device)
    dtype = guarded(module.dtype, device)
    if isinstance(dtype, dict):
        facts["dtype_error"] = dtype["error"]
    else:
        facts["dtype"] = str(dtype).replace("torch.", "")
    return facts


def onnxruntime_facts():
    try:
        import onnxruntime
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"ok": False, "error": _error(exc)}
    return {
        "ok": True,
        "version": getattr(onnxruntime, "__version__", None),
        "providers": guarded(lambda: list(onnxruntime.get_available_providers())),
        "device": guarded(onnxruntime.get_device),
    }


def ffmpeg_facts():
    facts = {"path": shutil.which("ffmpeg"), "imageio_ffmpeg": None, "imageio_ffmpeg_error": None}
    try:
        import imageio_ffmpeg

        facts["imageio_ffmpeg"] = imageio_ffmpeg.get_ffmpeg_exe()
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        facts["imageio_ffmpeg_error"] = _error(exc)
    return facts


def _cgroup_limit():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_facts():
    facts = {"total": None, "available": None, "source": None, "cgroup_limit": None}
    if sys.platform == "darwin":
        value = _run(["sysctl", "-n", "hw.memsize"])
        if value and value.isdigit():
            facts["total"], facts["source"] = int(value), "sysctl hw.memsize"
    elif os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable") and rest.split():
                    facts["total" if key == "MemTotal" else "available"] = int(rest.split()[0]) * 1024
        facts["source"] = "/proc/meminfo"
        facts["cgroup_limit"] = _cgroup_limit()
    if facts["total"] is None and hasattr(os, "sysconf"):
        try:
            facts["total"] = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
            facts["source"] = "sysconf"
        except (ValueError, OSError):
            pass
    return facts


def cache_facts(torch_ok):
    """Where the Hugging Face hub and torch.hub keep downloads, as this interpreter would resolve them."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(hf_home, "hub")
    torch_hub = None
    if torch_ok:
        try:
            import torch.hub

            torch_hub = torch.hub.get_dir()
        except Exception:  # noqa: BLE001
            torch_hub = None
    if torch_hub is None:
        torch_hub = os.path.join(os.environ.get("TORCH_HOME") or os.path.join(xdg, "torch"), "hub")
    return {"hf_hub": os.path.expanduser(hub), "torch_hub": os.path.expanduser(torch_hub)}


def gather(helper=None):
    facts = {"probe_version": PROBE_VERSION}
    facts["python"] = guarded(python_facts)
    facts["platform"] = guarded(platform_facts)
    facts["markers"] = guarded(marker_environment)
    facts["distributions"] = guarded(distributions)
    facts["decord"] = import_facts("decord")
    facts["torch"] = torch_facts()
    facts["helper"] = guarded(helper_facts, helper)
    facts["onnxruntime"] = onnxruntime_facts()
    facts["insightface"] = import_facts("insightface")
    facts["tkinter"] = import_facts("tkinter")
    facts["ffmpeg"] = guarded(ffmpeg_facts)
    facts["memory"] = guarded(memory_facts)
    facts["env"] = {name: os.environ.get(name) for name in ENV_VARS}
    facts["caches"] = guarded(cache_facts, bool(facts["torch"].get("ok")))
    return facts


def main(argv):
    helper = None
    if "--helper" in argv:
        index = argv.index("--helper")
        helper = argv[index + 1] if index + 1 < len(argv) else None
    # Packages print on import (insightface, some torch builds): send fd 1 to stderr meanwhile,
    # so that stdout carries the JSON and nothing else.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        facts = gather(helper)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    sys.stdout.write(json.dumps(facts, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
