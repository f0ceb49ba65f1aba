"""The checks of `lsync-port doctor`: one small pure function per topic.

Each takes the facts (a plain dict: what probe.py found in the target interpreter under "probe",
what tree.py found in the tree under "tree", and a few more) and answers with a Check: ok,
warning or blocker, what it found, and the concrete fix. A check that does not apply answers None.
Nothing here touches the machine, so the tests can give any machine's answers on any other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import catalog

OK, WARNING, BLOCKER = "ok", "warning", "blocker"
STATUSES = (OK, WARNING, BLOCKER)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warning | blocker
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading the facts


def value(x: Any) -> Any:
    """A fact, or None where the probe recorded an error instead ({"error": ...})."""
    return None if isinstance(x, dict) and set(x) == {"error"} else x


def section(facts: dict[str, Any], *keys: str) -> dict[str, Any]:
    """facts[k1][k2]..., or {} where any level is missing or an error."""
    node: Any = facts
    for key in keys:
        node = value(node.get(key)) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts = []
    for piece in str(text).split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def dotted(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


def macos(facts) -> tuple[int, ...] | None:
    return version_tuple(section(facts, "probe", "platform").get("mac_ver"))


def is_mac(facts) -> bool:
    return section(facts, "probe", "platform").get("system") == "Darwin"


def python_version(facts) -> tuple[int, int]:
    version = section(facts, "probe", "python").get("version") or [0, 0]
    return (int(version[0]), int(version[1]))


def installed(facts) -> dict[str, str]:
    return section(facts, "probe", "distributions").get("installed") or {}


def torch_facts(facts) -> dict[str, Any]:
    return section(facts, "probe", "torch")


def mps_available(facts) -> bool:
    return value(torch_facts(facts).get("mps_available")) is True


def cuda_available(facts) -> bool:
    return value(torch_facts(facts).get("cuda_available")) is True


def helper_device(facts) -> str:
    """The device the runtime helper picks; when it could not say, what torch's answers imply."""
    device = section(facts, "probe", "helper").get("device")
    if device:
        return str(device)
    return "mps" if mps_available(facts) else "cuda" if cuda_available(facts) else "cpu"


def release(facts) -> str | None:
    return (facts.get("tree") or {}).get("release")


def needs_insightface(facts) -> bool | None:
    """True when the tree detects faces with InsightFace (1.6 and later), False for 1.0/1.5,
    None without a tree."""
    tree = facts.get("tree") or {}
    if not tree or tree.get("error") or not tree.get("profile"):
        return None
    return tree.get("release") not in ("1.0", "1.5")


def size(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _python_cmd(facts) -> str:
    return str(facts.get("python") or "python")


def _truthy(text: str | None) -> bool:
    return str(text or "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------
# The machine


def check_platform(facts) -> Check:
    p = section(facts, "probe", "platform")
    system, machine = p.get("system") or "unknown", p.get("machine") or "unknown"
    if system != "Darwin":
        return Check(
            "platform",
            OK,
            f"{system} {machine}: not a Mac. MPS does not apply here; a ported tree runs on CUDA when there "
            "is a GPU, else on the CPU.",
        )
    version = macos(facts)
    chip = f" ({p['chip']})" if p.get("chip") else ""
    where = f"macOS {dotted(version)} on {machine}{chip}"
    if p.get("rosetta"):
        return Check(
            "platform",
            BLOCKER,
            f"{where}: this Python is an x86_64 build running under Rosetta on Apple Silicon; torch sees no MPS.",
            "Install an arm64 Python (python.org universal2, Homebrew in /opt/homebrew, or conda's osx-arm64) "
            "and recreate the environment with it.",
        )
    if machine != "arm64":
        return Check(
            "platform",
            WARNING,
            f"{where}: an Intel Mac. The port targets Apple Silicon; here the tree runs on the CPU.",
            "Use an Apple Silicon Mac for MPS.",
        )
    if version is None:
        return Check("platform", WARNING, f"{where}: the macOS version could not be read.", "Check `sw_vers`.")
    if version < catalog.MPS_MIN_MACOS:
        return Check(
            "platform",
            BLOCKER,
            f"{where}: the MPS backend needs macOS {dotted(catalog.MPS_MIN_MACOS)} or later.",
            "Update macOS (14 or later: bfloat16 and decord2 need it).",
        )
    if version < catalog.MPS_INT64_MACOS:
        return Check(
            "platform",
            WARNING,
            f"{where}: int64 reductions, cumsum and sort on MPS need macOS 13.3, bfloat16 needs 14.",
            "Update macOS to 14 or later.",
        )
    if version < catalog.MPS_BF16_MACOS:
        return Check(
            "platform",
            OK,
            f"{where}. bfloat16 on MPS needs macOS 14: keep float16, the default (LATENTSYNC_DTYPE unset).",
        )
    return Check("platform", OK, f"{where}: Apple Silicon, MPS-capable macOS (bfloat16 included).")


def check_python(facts) -> Check:
    py = section(facts, "probe", "python")
    version = python_version(facts)
    text = py.get("version_text") or dotted(version)
    where = f"{py.get('implementation') or 'Python'} {text} ({py.get('executable') or _python_cmd(facts)})"
    if version < (3, 8):
        return Check("python", BLOCKER, f"{where}: too old for LatentSync's packages.", "Use CPython 3.10 or 3.11.")
    if py.get("bits") == 32:
        return Check("python", BLOCKER, f"{where}: a 32-bit interpreter; torch has no 32-bit wheels.", "Use 64-bit.")
    p = section(facts, "probe", "platform")
    reader, why = catalog.video_reader_wheel(p.get("system", ""), p.get("machine", ""), version, macos(facts))
    if reader is None:
        if section(facts, "probe", "decord").get("ok"):
            return Check("python", OK, f"{where}: {why}; but `import decord` works here (built from source?).")
        if p.get("system") != "Darwin":
            return Check("python", WARNING, f"{where}: {why}.", "Build decord from source, or use an x86_64 machine.")
        return Check(
            "python",
            BLOCKER,
            f"{where}: {why}.",
            "Use CPython 3.11 on macOS arm64 (eva-decord), or CPython 3.12-3.14 on macOS 14+ (decord2).",
        )
    if py.get("implementation") not in (None, "CPython"):
        return Check("python", WARNING, f"{where}: the wheels LatentSync needs are built for CPython.", "Use CPython.")
    return Check("python", OK, f"{where}: {why}.")


def check_decord(facts) -> Check:
    d = section(facts, "probe", "decord")
    providers = section(facts, "probe", "distributions").get("decord_providers") or []
    dists = installed(facts)
    p = section(facts, "probe", "platform")
    reader, _ = catalog.video_reader_wheel(
        p.get("system", ""), p.get("machine", ""), python_version(facts), macos(facts)
    )
    install = f"{_python_cmd(facts)} -m pip install " + (
        "eva-decord==0.6.1" if reader == "eva-decord" else reader or "eva-decord"
    )
    if d.get("ok"):
        by = (
            ", ".join(f"{name} {dists.get(name, '?')}" for name in providers) or "no pip distribution (a source build?)"
        )
        detail = f"`import decord` works (decord.__version__ {d.get('version') or '?'}), provided by {by}."
        if len(providers) > 1:
            keep = reader if reader in providers else providers[0]
            others = " ".join(name for name in providers if name != keep)
            return Check(
                "decord",
                WARNING,
                detail + " They install the same files and overwrite each other.",
                f"{_python_cmd(facts)} -m pip uninstall -y {others}; "
                f"{_python_cmd(facts)} -m pip install --force-reinstall {keep}",
            )
        return Check("decord", OK, detail)
    error = str(d.get("error") or "")
    if "No module named" in error:
        return Check(
            "decord",
            BLOCKER,
            "decord is not installed; LatentSync imports it at module level (latentsync/utils/util.py).",
            install if reader else "No wheel for this Python here (see python): change the interpreter first.",
        )
    if "LP_PyObject" in error:
        return Check(
            "decord",
            BLOCKER,
            f"`import decord` fails with eva-decord's known ctypes error: {error}",
            f"{install} --force-reinstall; if it persists, decord2 (CPython 3.10+ on macOS 14+) installs the same "
            "`import decord`.",
        )
    return Check("decord", BLOCKER, f"`import decord` fails: {error}", f"{install} --force-reinstall")


def check_torch(facts) -> Check:
    t = torch_facts(facts)
    if not t.get("ok"):
        fix = f"{_python_cmd(facts)} -m pip install torch torchvision"
        if is_mac(facts):
            fix += " (PyPI's macOS arm64 wheels include MPS)"
        return Check("torch", BLOCKER, f"torch does not import: {t.get('error') or 'unknown error'}", fix)
    build = f"CUDA {t['cuda_build']} build" if t.get("cuda_build") else "no CUDA in this build"
    detail = f"torch {t.get('version')} ({build})."
    version = version_tuple(t.get("version"))
    if version is not None and version < (2, 0):
        return Check(
            "torch",
            WARNING,
            detail + " LatentSync and the runtime helper expect torch 2.x.",
            "Install the torch version the tree's requirements pin.",
        )
    return Check("torch", OK, detail)


def check_target_torch(facts) -> Check | None:
    """On a Mac: the installed torch against the tree's target torch (the one its requirements pin,
    which `verify --device mps-sim` judged the port against)."""
    target = section(facts, "tree").get("target_torch")
    t = torch_facts(facts)
    if not is_mac(facts) or not target or not t.get("ok"):
        return None
    if target.get("error"):
        return Check("target torch", WARNING, f"the tree's target torch is unknown: {target['error']}")
    from ..verify.target_torch import kernels_missing

    try:
        installed = Version(str(t.get("version"))).public
    except InvalidVersion:
        return None
    wanted = target["version"]
    verify = f"lsync-port verify TREE --device mps-sim --target-torch {installed}"
    said = f"installed torch {installed}, the tree's target torch {wanted} ({target['origin']})"
    if installed == wanted:
        return Check("target torch", OK, f"{said}: verify's mps-sim verdict is for this torch.")
    missing = kernels_missing(installed, wanted)
    if missing is None:
        return Check(
            "target torch",
            WARNING,
            f"{said}: lsync-port ships no MPS table for torch {installed}, so the verdict for {wanted} "
            "may not hold here.",
            f"{_python_cmd(facts)} -m pip install torch=={wanted}",
        )
    listed = f" ({len(missing)}: {_listing(missing, 5)})" if missing else ""
    if Version(installed) > Version(wanted):
        gained = kernels_missing(wanted, installed) or []
        return Check(
            "target torch",
            WARNING,
            f"{said}: mps-sim's verdict was for {wanted}, not for the newer torch here, which has "
            f"{len(gained)} MPS kernels more and lacks {len(missing)} that {wanted} has{listed}.",
            f"For a verdict on this torch: {verify}; or install the pin: {_python_cmd(facts)} -m pip install "
            f"torch=={wanted}",
        )
    return Check(
        "target torch",
        WARNING,
        f"{said}: older than the target, so mps-sim's verdict may not hold here; ops with an MPS kernel in "
        f"{wanted} but none here{listed or ': none'}.",
        f"{_python_cmd(facts)} -m pip install torch=={wanted} (or {verify})",
    )


def check_mps(facts) -> Check:
    t = torch_facts(facts)
    built, available = value(t.get("mps_built")), value(t.get("mps_available"))
    answers = f"torch.backends.mps.is_built() {built}, is_available() {available}"
    if not is_mac(facts):
        if not t.get("ok"):
            return Check("mps", OK, "not a Mac: MPS does not apply (and torch does not import).")
        return Check("mps", OK, f"MPS not available: not a Mac ({answers}).")
    if not t.get("ok"):
        return Check("mps", WARNING, "not checked: torch does not import (see torch).", "Install torch first.")
    p = section(facts, "probe", "platform")
    if built and available:
        memory = value(t.get("mps_recommended_max_memory"))
        extra = f"; Metal recommends at most {size(memory)} for this process" if memory else ""
        return Check("mps", OK, f"MPS built and available ({answers}){extra}.")
    if not built:
        return Check(
            "mps",
            BLOCKER,
            f"this torch build has no MPS ({answers}).",
            f"{_python_cmd(facts)} -m pip install --force-reinstall torch torchvision (PyPI's macOS arm64 wheels "
            "have MPS).",
        )
    if p.get("rosetta"):
        reason, fix = "this Python runs under Rosetta (x86_64)", "Use an arm64 Python (see platform)."
    elif p.get("machine") != "arm64":
        return Check("mps", WARNING, f"MPS not available on this Intel Mac ({answers}).", "Use an Apple Silicon Mac.")
    elif (macos(facts) or (99,)) < catalog.MPS_MIN_MACOS:
        reason, fix = "macOS is older than 12.3", "Update macOS."
    else:
        reason, fix = (
            "a virtual machine without Metal, or a torch too old for this macOS",
            "Run on the host; update torch.",
        )
    return Check("mps", BLOCKER, f"MPS is built but not available: {reason} ({answers}).", fix)


def check_cuda(facts) -> Check | None:
    t = torch_facts(facts)
    if not t.get("ok"):
        return None
    if is_mac(facts):
        return Check("cuda", OK, "not available (there is no CUDA on macOS); the ported tree does not need it.")
    devices = value(t.get("cuda_devices")) or []
    if cuda_available(facts):
        listed = "; ".join(
            f"{d.get('name')} ({size(d.get('total_memory'))}, "
            f"compute capability {dotted(tuple(d.get('capability') or ()))})"
            for d in devices
        )
        return Check("cuda", OK, f"CUDA {t.get('cuda_build') or ''} available: {listed or 'devices unknown'}.")
    if t.get("cuda_build"):
        visible = section(facts, "probe", "env").get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return Check(
            "cuda",
            WARNING,
            f"torch is a CUDA {t['cuda_build']} build but sees no GPU{hint}.",
            "Check `nvidia-smi` and the driver; unset CUDA_VISIBLE_DEVICES if it hides the GPU.",
        )
    return Check("cuda", OK, "not available (a CPU-only torch build, no GPU).")


def check_device(facts) -> Check | None:
    h = section(facts, "probe", "helper")
    if not h:
        return None
    whose = "the tree's runtime helper" if facts.get("helper_source") == "tree" else "lsync-port's runtime helper"
    env = section(facts, "probe", "env")
    if h.get("error"):
        return Check(
            "device",
            BLOCKER,
            f"{whose} fails here: {h['error']}",
            "Fix or unset LATENTSYNC_DEVICE / LATENTSYNC_DTYPE." if "LATENTSYNC_" in h["error"] else "Report it.",
        )
    dev = str(h.get("device"))
    if h.get("dtype_error"):
        return Check(
            "device",
            BLOCKER,
            f"{whose}: device() → {dev}, but dtype() raises: {h['dtype_error']}",
            "Set LATENTSYNC_DTYPE to float16, bfloat16 or float32, or unset it.",
        )
    dtype = h.get("dtype") or "?"
    kind = dev.split(":", 1)[0]
    forced = (env.get("LATENTSYNC_DEVICE") or "").strip().lower() not in ("", "auto")
    picked = f"{whose} picks device {dev}, dtype {dtype}" + (" (set by LATENTSYNC_DEVICE)" if forced else "")
    if kind not in ("mps", "cuda", "cpu") or (kind == "cuda" and ":" in dev and not dev.split(":", 1)[1].isdigit()):
        return Check(
            "device",
            BLOCKER,
            f"{picked}: not a device LatentSync can use.",
            "Set LATENTSYNC_DEVICE to mps, cuda, cuda:N or cpu, or unset it.",
        )
    if kind == "mps" and not mps_available(facts):
        return Check("device", BLOCKER, f"{picked}, but MPS is not available here.", "Unset LATENTSYNC_DEVICE.")
    if kind == "cuda" and not cuda_available(facts):
        return Check("device", BLOCKER, f"{picked}, but CUDA is not available here.", "Unset LATENTSYNC_DEVICE.")
    if kind == "mps" and dtype == "bfloat16" and (macos(facts) or (0,)) < catalog.MPS_BF16_MACOS:
        return Check(
            "device",
            BLOCKER,
            f"{picked}: bfloat16 on MPS needs macOS 14 (this is {dotted(macos(facts))}).",
            "Set LATENTSYNC_DTYPE=float16, or unset it.",
        )
    if kind == "cpu":
        tree = facts.get("tree") or {}
        if tree.get("cpu_face_detection_refused"):
            return Check(
                "device",
                BLOCKER,
                f"{picked}; on cpu this tree's ImageProcessor has no face detector and raises "
                "NotImplementedError('Using the CPU for face detection is not supported').",
                "Run on mps or cuda: on cpu this tree cannot detect faces.",
            )
        if forced and (mps_available(facts) or cuda_available(facts)):
            return Check("device", WARNING, f"{picked}: the GPU here is left unused.", "Unset LATENTSYNC_DEVICE.")
        return Check(
            "device",
            WARNING,
            f"{picked}: no MPS or CUDA here, so inference would run on the CPU, far slower than on a GPU.",
            "Run on an Apple Silicon Mac (mps) or an NVIDIA GPU (cuda).",
        )
    return Check("device", OK, picked + ".")


def check_onnxruntime(facts) -> Check:
    needs = needs_insightface(facts)
    if needs is False:
        return Check("onnxruntime", OK, f"not used by LatentSync {release(facts)} (no InsightFace).")
    o = section(facts, "probe", "onnxruntime")
    dists = installed(facts)
    py = _python_cmd(facts)
    if not o.get("ok"):
        fix = f"{py} -m pip install onnxruntime"
        if is_mac(facts):
            fix += " (its macOS wheels include CoreMLExecutionProvider; onnxruntime-gpu has none for macOS)"
        return Check(
            "onnxruntime",
            BLOCKER if needs else WARNING,
            f"onnxruntime does not import ({o.get('error') or 'unknown error'}); LatentSync 1.6+ runs its "
            "InsightFace face detection on it.",
            fix,
        )
    providers = value(o.get("providers")) or []
    detail = f"onnxruntime {o.get('version')}: providers {', '.join(providers) or 'none'}"
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        return Check(
            "onnxruntime",
            WARNING,
            detail + "; both onnxruntime and onnxruntime-gpu are installed and overwrite each other's files.",
            f"{py} -m pip uninstall -y onnxruntime onnxruntime-gpu; then install the one you want",
        )
    if is_mac(facts):
        if "CoreMLExecutionProvider" in providers:
            return Check("onnxruntime", OK, detail + "; face detection can use CoreML.")
        return Check(
            "onnxruntime",
            WARNING,
            detail + "; no CoreMLExecutionProvider, so face detection runs on the CPU (slower).",
            f"{py} -m pip install -U onnxruntime (PyPI's macOS wheels, 1.17+, include CoreML)",
        )
    if cuda_available(facts) and "CUDAExecutionProvider" not in providers:
        return Check(
            "onnxruntime",
            WARNING,
            detail + "; no CUDAExecutionProvider, so face detection runs on the CPU although torch has CUDA.",
            f"{py} -m pip uninstall -y onnxruntime; {py} -m pip install onnxruntime-gpu",
        )
    return Check("onnxruntime", OK, detail + ".")


def check_insightface(facts) -> Check:
    needs = needs_insightface(facts)
    if needs is False:
        return Check("insightface", OK, f"not used by LatentSync {release(facts)}.")
    i = section(facts, "probe", "insightface")
    if i.get("ok"):
        return Check("insightface", OK, f"insightface {i.get('version') or '?'} imports.")
    error = str(i.get("error") or "unknown error")
    fix = f"{_python_cmd(facts)} -m pip install insightface"
    if "No module named 'insightface'" in error:
        fix += (
            " (upstream pins 0.7.3, an sdist: it needs a C++ compiler, on a Mac `xcode-select --install`)"
            if is_mac(facts)
            else " (upstream pins 0.7.3, an sdist that needs a C++ compiler)"
        )
    return Check(
        "insightface",
        BLOCKER if needs else WARNING,
        f"insightface does not import ({error}); LatentSync 1.6+ detects faces with it.",
        fix,
    )


def check_ffmpeg(facts) -> Check:
    f = section(facts, "probe", "ffmpeg")
    if f.get("path"):
        return Check("ffmpeg", OK, f"ffmpeg on PATH: {f['path']}.")
    needed = (
        "LatentSync runs `ffmpeg` by name (util.check_ffmpeg_installed, the 25 fps conversion in read_video, "
        "the final mux)"
    )
    exe = f.get("imageio_ffmpeg")
    install = (
        "brew install ffmpeg" if is_mac(facts) else "apt-get install ffmpeg (or conda install -c conda-forge ffmpeg)"
    )
    if exe:
        return Check(
            "ffmpeg",
            BLOCKER,
            f"ffmpeg is not on PATH; imageio-ffmpeg has one at {exe}, but {needed}.",
            f"Link it into a folder on PATH: ln -s {exe} /usr/local/bin/ffmpeg (or {install})",
        )
    return Check("ffmpeg", BLOCKER, f"no ffmpeg on PATH and no imageio-ffmpeg; {needed}.", install)


# ---------------------------------------------------------------------------------------------
# The tree


def check_tree(facts) -> Check | None:
    tree = facts.get("tree")
    if not tree:
        return None
    path = tree.get("path")
    if tree.get("error"):
        return Check(
            "tree",
            BLOCKER,
            f"not a LatentSync tree: {tree['error']['message']}",
            "Give the root of a LatentSync checkout (the folder with scripts/inference.py).",
        )
    which = f"profile {tree.get('profile')}, " + (
        f"release {tree['release']} ({tree.get('release_commit')})" if tree.get("release") else "release not recognised"
    )
    status = tree.get("status") or {}
    if status.get("error"):
        return Check("tree", BLOCKER, f"{which}; {status['error']}", f"See `lsync-port status {path}`.")
    if not status.get("patched"):
        if cuda_available(facts) and not mps_available(facts):
            return Check(
                "tree",
                WARNING,
                f"{which}; not patched: it runs on CUDA as upstream wrote it, but nowhere else.",
                f"lsync-port apply {path}",
            )
        return Check(
            "tree",
            BLOCKER,
            f'{which}; not patched: upstream code asks for CUDA ("Torch not compiled with CUDA enabled").',
            f"lsync-port apply {path}",
        )
    by = f"patched by lsync-port {status.get('tool_version')} ({status.get('rules')} rules)"
    summary = status.get("summary") or ""
    if "partially" in summary:
        return Check(
            "tree",
            BLOCKER,
            f"{which}; {summary}.",
            f"lsync-port apply {path} (finishes the port) or lsync-port revert {path}",
        )
    if status.get("changed"):
        return Check(
            "tree",
            WARNING,
            f"{which}; {by}, but edited by hand since: {', '.join(status['changed'][:5])}.",
            f"lsync-port status {path}",
        )
    current = facts.get("tool_version")
    if current and status.get("tool_version") != current:
        return Check(
            "tree",
            WARNING,
            f"{which}; {by}; this is lsync-port {current}.",
            f"lsync-port apply {path} (upgrades the port)",
        )
    return Check("tree", OK, f"{which}; {by}.")


def _requirement_lines(text: str):
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_requirements(facts) -> Check | None:
    tree = facts.get("tree") or {}
    if not tree or tree.get("error"):
        return None
    files = tree.get("requirements")
    if not files:
        return Check("requirements", WARNING, "the tree has no requirements.txt.", "")
    env = section(facts, "probe", "markers")
    p = section(facts, "probe", "platform")
    system, machine = p.get("system", ""), p.get("machine", "")
    py, mac = python_version(facts), macos(facts)
    dists = installed(facts)
    satisfied, missing, different, no_wheel, notes = [], [], [], [], []
    skipped = 0
    for file in files:
        for line in _requirement_lines(file["text"]):
            if line.startswith("-"):
                if "download.pytorch.org/whl/cu" in line and system == "Darwin":
                    notes.append(f"{file['file']}: {line.split()[0]} names a CUDA wheel index (no macOS builds there)")
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement:
                notes.append(f"{file['file']}: cannot parse {line!r}")
                continue
            if req.marker is not None and env:
                try:
                    if not req.marker.evaluate(dict(env, extra="")):
                        skipped += 1
                        continue
                except Exception:  # noqa: BLE001 - an odd marker is a note, not a crash
                    notes.append(f"cannot evaluate the marker of {line!r}")
            name = canonicalize_name(req.name)
            present = [(d, dists[d]) for d in catalog.EQUIVALENT.get(name, (name,)) if d in dists]
            if not present:
                reason = catalog.no_wheel(name, system, machine, py, mac)
                (no_wheel if reason else missing).append(f"{line} ({reason})" if reason else str(req))
                continue
            dist, version = present[0]
            label = name if dist == name else f"{name} (as {dist})"
            try:
                fits = not req.specifier or req.specifier.contains(Version(version), prereleases=True)
            except InvalidVersion:
                fits = True
            if fits:
                satisfied.append(label)
            else:
                different.append(f"{label} {version} (wants {req.specifier})")
    counted = len(satisfied) + len(missing) + len(different) + len(no_wheel)
    parts = [
        f"{', '.join(f['file'] for f in files)}: {counted} for this platform"
        + (f" ({skipped} skipped by their markers)" if skipped else "")
        + f", {len(satisfied)} satisfied"
    ]
    if no_wheel:
        parts.append("no wheel here: " + _listing(no_wheel))
    if missing:
        parts.append("missing: " + _listing(missing))
    if different:
        parts.append("other versions: " + _listing(different))
    if notes:
        parts.append("; ".join(notes))
    detail = "; ".join(parts) + "."
    install = f"{_python_cmd(facts)} -m pip install -r {tree.get('path')}/requirements.txt"
    if no_wheel:
        patched = (tree.get("status") or {}).get("patched")
        fix = (
            f"lsync-port apply {tree.get('path')} (rewrites these lines), then {install}"
            if not patched
            else "Edit requirements.txt: these lines cannot install here."
        )
        return Check("requirements", BLOCKER, detail, fix)
    if missing or different or notes:
        return Check(
            "requirements",
            WARNING,
            detail + " Some pins are for training or the web demo only; version differences often still work.",
            install,
        )
    return Check("requirements", OK, detail)


def _checkpoint_line(entry: dict[str, Any]) -> str:
    return f"{entry['path']} {size(entry.get('size'))}"


def check_checkpoints(facts) -> Check | None:
    tree = facts.get("tree") or {}
    if not tree or tree.get("error"):
        return None
    entries = tree.get("checkpoints")
    if entries is None:
        return Check("checkpoints", OK, f"lsync-port has no checkpoint list for profile {tree.get('profile')}.")
    required = [e for e in entries if e.get("required")]
    missing = [e for e in required if not e.get("exists")]
    pointers = [e for e in required if e.get("exists") and (e.get("lfs_pointer") or (e.get("size") or 0) < 1024**2)]
    present = [e for e in required if e.get("exists") and e not in pointers]
    for_release = f"LatentSync {tree.get('release') or '(unrecognised release: the 1.6 list)'}"
    parts = [f"{for_release} needs {', '.join(e['path'] for e in required)}"]
    if present:
        parts.append("present: " + ", ".join(_checkpoint_line(e) for e in present))
    if pointers:
        parts.append(
            "not real weights (Git LFS pointers or truncated): " + ", ".join(_checkpoint_line(e) for e in pointers)
        )
    if missing:
        parts.append("missing: " + ", ".join(e["path"] for e in missing))
    detail = "; ".join(parts) + "."
    if missing or pointers:
        by_repo: dict[str, list[str]] = {}
        others = []
        for e in missing + pointers:
            if e.get("repo"):
                by_repo.setdefault(e["repo"], []).append(e["remote"])
            elif e.get("get"):
                others.append(e["get"])
        fixes = [
            f"huggingface-cli download {repo} {' '.join(files)} --local-dir checkpoints"
            for repo, files in by_repo.items()
        ]
        return Check("checkpoints", BLOCKER, detail, f"cd {tree.get('path')} && " + " && ".join(fixes + others))
    return Check("checkpoints", OK, detail)


def check_face_models(facts) -> Check | None:
    tree = facts.get("tree") or {}
    entries = [e for e in (tree.get("checkpoints") or []) if not e.get("required")]
    if not entries:
        return None
    group = entries[0].get("group")
    present = [e for e in entries if e.get("exists")]
    absent = [e for e in entries if not e.get("exists")]
    where = entries[0].get("location", "").rsplit("/", 1)[0]
    names = ", ".join(e["path"].rsplit("/", 1)[-1] for e in entries)
    if not absent:
        return Check(
            "face-models",
            OK,
            f"{group} models present in {where}: "
            + ", ".join(f"{e['path'].rsplit('/', 1)[-1]} {size(e['size'])}" for e in present)
            + ".",
        )
    if group == "buffalo_l" and absent[0].get("folder_exists"):
        return Check(
            "face-models",
            BLOCKER,
            f"{where} exists but lacks {', '.join(e['path'].rsplit('/', 1)[-1] for e in absent)}; "
            "InsightFace downloads only when the folder is absent, and FaceAnalysis then finds no detector.",
            f"rm -r {where} (it is downloaded again on first run), or put {names} there",
        )
    return Check(
        "face-models",
        WARNING,
        f"{names} not in {where}: {absent[0].get('get')}.",
        "None needed when the first run has network access; offline, put the files there first.",
    )


def check_vae(facts) -> Check | None:
    vae = facts.get("vae") or {}
    if not vae:
        return None
    repo = vae.get("repo", catalog.VAE_REPO)
    usable = [s for s in vae.get("snapshots") or [] if s.get("config") and s.get("weights")]
    if usable:
        snap = usable[-1]
        weights = ", ".join(f"{name} {size(n)}" for name, n in snap["weights"].items())
        return Check("vae", OK, f"{repo} in the Hugging Face cache ({snap['path']}: {weights}).")
    offline = _truthy(section(facts, "probe", "env").get("HF_HUB_OFFLINE"))
    detail = f"{repo} is not in the Hugging Face cache ({vae.get('cache')}); diffusers downloads it on the first run"
    fix = f"huggingface-cli download {repo}"
    if offline:
        return Check(
            "vae", BLOCKER, detail + ", but HF_HUB_OFFLINE is set.", fix + " (with network), or unset HF_HUB_OFFLINE"
        )
    return Check("vae", WARNING, detail + " (needs network).", fix)


def check_tkinter(facts) -> Check | None:
    tree = facts.get("tree") or {}
    if not tree.get("turtle_import"):
        return None
    t = section(facts, "probe", "tkinter")
    if t.get("ok"):
        return Check("tkinter", OK, "latentsync/models/attention.py imports turtle; tkinter imports here.")
    return Check(
        "tkinter",
        BLOCKER,
        "latentsync/models/attention.py does `from turtle import forward` (unused), which needs tkinter; "
        f"this Python has none ({t.get('error')}).",
        "Delete that line, or use a Python built with Tk (Homebrew: brew install python-tk@3.X).",
    )


# ---------------------------------------------------------------------------------------------
# Memory and environment


def _watermark(env: dict[str, Any]) -> float | None:
    """PYTORCH_MPS_HIGH_WATERMARK_RATIO as a number (0 means no cap); None when unset or not a number."""
    text = env.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    if text is None:
        return catalog.MPS_DEFAULT_HIGH_WATERMARK
    try:
        ratio = float(text)
    except ValueError:
        return None
    return ratio if ratio >= 0 else None


def _chunking(facts) -> bool:
    """Whether the port's attention/VAE chunking will run on mps: the tree is ported (or no tree
    was given: doctor then speaks of the port) and LATENTSYNC_MPS_CHUNKING does not turn it off."""
    tree = facts.get("tree") or {}
    ported = not tree or bool((tree.get("status") or {}).get("patched"))
    mode = str(section(facts, "probe", "env").get("LATENTSYNC_MPS_CHUNKING") or "1").strip().lower()
    return ported and mode not in ("0", "false", "no", "off")


def forecast_row(facts, kind: str, res: int) -> tuple[dict, str] | None:
    """The forecast configuration that matches how the tree will run here (device, the helper's
    dtype, chunking), with a few words on where the figure comes from; None when the forecast
    has no such row or was made at another resolution."""
    from ..forecast import pick

    forecast = facts.get("forecast") or {}
    if kind not in ("mps", "cuda") or not forecast.get("configurations") or forecast.get("resolution") != res:
        return None
    dtype = section(facts, "probe", "helper").get("dtype") or "float16"
    chunking = _chunking(facts)
    row = pick(forecast, kind, dtype, chunking)
    if row is None:
        return None
    how = f"{kind} {row['dtype']}" + (f", chunking {'on' if chunking else 'off'}" if kind == "mps" else "")
    where = (
        "live `lsync-port forecast` of this tree"
        if forecast.get("source") == "live"
        else f"forecast of LatentSync {forecast.get('release')} shipped with lsync-port (torch {forecast.get('torch')})"
    )
    return row, f"{how}; {where}"


def check_memory(facts) -> Check:
    mem = section(facts, "probe", "memory")
    total, cgroup = mem.get("total"), mem.get("cgroup_limit")
    resolution = facts.get("resolution") or {}
    res = int(resolution.get("value") or 512)
    kind = helper_device(facts).split(":", 1)[0]
    env = section(facts, "probe", "env")
    forecast = forecast_row(facts, kind, res)
    if forecast is not None:
        # The forecast counts the tensors of one 16-frame chunk and the weights; the allocator's
        # cache, the face detector and (on a Mac) macOS itself come on top, hence "at least".
        row, basis = forecast
        need = row["peak_bytes"]
        needs = f"at least {size(need)} at peak for {res}x{res} ({resolution.get('source') or 'assumed'}; {basis})"
        largest = row.get("largest_buffer_bytes") or 0
        if kind == "mps" and largest > catalog.METAL_BUFFER_LIMIT:
            return Check(
                "memory",
                BLOCKER,
                f"one buffer of {size(largest)} ({row.get('largest_buffer_op') or 'attention'}): more than Metal's "
                f"2**32-byte limit for a buffer, so the run stops ({basis}).",
                "keep the port's chunking on: `lsync-port apply` the tree, and unset LATENTSYNC_MPS_CHUNKING=0",
            )
    else:
        need_gb = catalog.memory_need_gb(res, release(facts))
        need = need_gb * 1024**3
        hint = "; `lsync-port doctor TREE --forecast` measures it" if kind in ("mps", "cuda") else ""
        failed = (facts.get("forecast") or {}).get("error")
        if failed:
            hint = f"; the live forecast failed: {failed}"
        needs = (
            f"{'at most ' if res < 256 else ''}~{need_gb:g} GB for {res}x{res} "
            f"({resolution.get('source') or 'assumed'}; estimate: {catalog.MEMORY_BASIS}{hint})"
        )
    weights = sum(e.get("size") or 0 for e in ((facts.get("tree") or {}).get("checkpoints") or []) if e.get("required"))
    if total and weights and total < weights:
        return Check(
            "memory",
            BLOCKER,
            f"{size(total)} of RAM, less than the checkpoints alone ({size(weights)}).",
            "Use a machine with more memory.",
        )
    fix_mps = (
        "export PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 (lifts the MPS cap; macOS may swap) and "
        "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES=268435456 (attention in 256 MiB chunks: lower peak, slower); "
        "close other apps"
    )
    if kind == "mps":
        recommended = value(torch_facts(facts).get("mps_recommended_max_memory"))
        budget = recommended or total
        budget_text = (
            f"Metal recommends {size(recommended)} for this process (of {size(total)} RAM)"
            if recommended
            else f"{size(total)} RAM (torch does not report Metal's limit)"
        )
        if not budget:
            return Check("memory", WARNING, f"memory unknown; {needs}.", "")
        if budget >= need:
            return Check("memory", OK, f"{budget_text}; {needs}.")
        ratio = _watermark(env)
        ratio = catalog.MPS_DEFAULT_HIGH_WATERMARK if ratio is None else ratio
        cap = math.inf if ratio == 0 or not recommended else recommended * ratio
        if need > cap:
            return Check(
                "memory",
                BLOCKER,
                f"{budget_text}, {size(cap)} with PYTORCH_MPS_HIGH_WATERMARK_RATIO={ratio:g}; {needs}: expect "
                "'MPS backend out of memory'.",
                fix_mps,
            )
        return Check("memory", WARNING, f"{budget_text}; {needs}: expect swapping.", fix_mps)
    if kind == "cuda":
        devices = value(torch_facts(facts).get("cuda_devices")) or []
        budget = devices[0].get("total_memory") if devices else None
        if budget is None:
            return Check("memory", WARNING, f"GPU memory unknown; {needs}.", "")
        if budget >= need:
            return Check("memory", OK, f"GPU memory {size(budget)}; {needs}.")
        return Check(
            "memory",
            WARNING,
            f"GPU memory {size(budget)}; {needs}.",
            "Free the GPU of other processes, or use a smaller resolution (LatentSync 1.5, 256x256).",
        )
    budget = min(x for x in (total, cgroup) if x) if (total or cgroup) else None
    if budget is None:
        return Check("memory", WARNING, f"RAM unknown; {needs}.", "")
    limited = f" (a cgroup limit of {size(cgroup)})" if cgroup and cgroup < (total or math.inf) else ""
    if budget >= need:
        return Check("memory", OK, f"{size(budget)} RAM{limited} for inference on the CPU; {needs}.")
    return Check(
        "memory",
        WARNING,
        f"{size(budget)} RAM{limited} for inference on the CPU; {needs}.",
        "Close other programs, or use a machine with more memory.",
    )


def check_environment(facts) -> Check:
    env = section(facts, "probe", "env")
    relevant = (
        "PYTORCH_ENABLE_MPS_FALLBACK",
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
        "LATENTSYNC_DEVICE",
        "LATENTSYNC_DTYPE",
        "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES",
    )
    shown = ", ".join(f"{name}={env[name]}" for name in relevant if env.get(name) is not None)
    detail = shown or "none of PYTORCH_ENABLE_MPS_FALLBACK, PYTORCH_MPS_HIGH_WATERMARK_RATIO, LATENTSYNC_* set"
    problems, fixes = [], []
    ratio = env.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    if ratio is not None and _watermark(env) is None:
        problems.append(f"PYTORCH_MPS_HIGH_WATERMARK_RATIO={ratio!r} is not a number >= 0")
        fixes.append("set PYTORCH_MPS_HIGH_WATERMARK_RATIO to a number such as 1.7 (default) or 0.0 (no cap)")
    chunk = env.get("LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES")
    if chunk is not None and not (chunk.strip().isdigit() and int(chunk) > 0):
        problems.append(f"LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES={chunk!r} is not a positive number of bytes")
        fixes.append("set LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES to bytes, e.g. 268435456")
    if is_mac(facts) and (env.get("PYTORCH_ENABLE_MPS_FALLBACK") or "").strip() != "1":
        problems.append(
            "PYTORCH_ENABLE_MPS_FALLBACK is not 1: an op without an MPS kernel raises NotImplementedError "
            "instead of running on the CPU"
        )
        fixes.append("export PYTORCH_ENABLE_MPS_FALLBACK=1")
    if problems:
        return Check("environment", WARNING, f"{detail}. " + "; ".join(problems) + ".", "; ".join(fixes))
    if _watermark(env) == 0 and ratio is not None:
        detail += " (the MPS memory cap is off: macOS may swap instead of raising out-of-memory)"
    return Check("environment", OK, detail + ".")


# ---------------------------------------------------------------------------------------------


def check_probe(facts) -> Check | None:
    error = facts.get("probe_error")
    if not error:
        return None
    return Check(
        "interpreter",
        BLOCKER,
        f"could not inspect {facts.get('python')}: {error}",
        "Give --python a working Python 3 interpreter (the one that runs the tree).",
    )


CHECKS = (
    check_platform,
    check_python,
    check_decord,
    check_torch,
    check_target_torch,
    check_mps,
    check_cuda,
    check_device,
    check_onnxruntime,
    check_insightface,
    check_ffmpeg,
    check_tree,
    check_requirements,
    check_checkpoints,
    check_face_models,
    check_vae,
    check_tkinter,
    check_memory,
    check_environment,
)


def diagnose(facts: dict[str, Any]) -> list[Check]:
    """Every check that applies, in table order. When the probe could not run, only what is known."""
    if facts.get("probe_error"):
        chosen = (check_probe, check_tree, check_checkpoints)
    else:
        chosen = CHECKS
    return [c for c in (check(facts) for check in chosen) if c is not None]
