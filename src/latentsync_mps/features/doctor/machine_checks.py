"""Doctor checks of the machine and its interpreter: platform, Python, decord, torch and its target,
MPS, CUDA, the device the runtime helper picks, onnxruntime, InsightFace, ffmpeg."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from latentsync_mps.features.doctor import catalog
from latentsync_mps.features.doctor.facts import ProbeFacts, dotted, reads_facts, size, value, version_tuple
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING, Check, listing


@reads_facts
def check_platform(facts: ProbeFacts) -> Check:
    p = facts.section("probe", "platform")
    system, machine = p.get("system") or "unknown", p.get("machine") or "unknown"
    if system != "Darwin":
        return Check(
            "platform",
            OK,
            f"{system} {machine}: not a Mac. MPS does not apply here; a ported tree runs on CUDA when there "
            "is a GPU, else on the CPU.",
        )
    version = facts.macos
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


@reads_facts
def check_python(facts: ProbeFacts) -> Check:
    py = facts.section("probe", "python")
    version = facts.python_version
    text = py.get("version_text") or dotted(version)
    where = f"{py.get('implementation') or 'Python'} {text} ({py.get('executable') or facts.python_cmd})"
    if version < (3, 8):
        return Check("python", BLOCKER, f"{where}: too old for LatentSync's packages.", "Use CPython 3.10 or 3.11.")
    if py.get("bits") == 32:
        return Check("python", BLOCKER, f"{where}: a 32-bit interpreter; torch has no 32-bit wheels.", "Use 64-bit.")
    p = facts.section("probe", "platform")
    reader, why = catalog.video_reader_wheel(p.get("system", ""), p.get("machine", ""), version, facts.macos)
    if reader is None:
        if facts.section("probe", "decord").get("ok"):
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


@reads_facts
def check_decord(facts: ProbeFacts) -> Check:
    d = facts.section("probe", "decord")
    providers = facts.section("probe", "distributions").get("decord_providers") or []
    dists = facts.installed
    p = facts.section("probe", "platform")
    reader, _ = catalog.video_reader_wheel(p.get("system", ""), p.get("machine", ""), facts.python_version, facts.macos)
    install = f"{facts.python_cmd} -m pip install " + (
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
                f"{facts.python_cmd} -m pip uninstall -y {others}; "
                f"{facts.python_cmd} -m pip install --force-reinstall {keep}",
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


@reads_facts
def check_torch(facts: ProbeFacts) -> Check:
    t = facts.torch
    if not t.get("ok"):
        fix = f"{facts.python_cmd} -m pip install torch torchvision"
        if facts.is_mac:
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


@reads_facts
def check_target_torch(facts: ProbeFacts) -> Check | None:
    """On a Mac: the installed torch against the tree's target torch (the one its requirements pin,
    which `verify --device mps-sim` judged the port against)."""
    target = facts.section("tree").get("target_torch")
    t = facts.torch
    if not facts.is_mac or not target or not t.get("ok"):
        return None
    if target.get("error"):
        return Check("target torch", WARNING, f"the tree's target torch is unknown: {target['error']}")
    from latentsync_mps.pack.target_torch import kernels_missing, min_macos, newest_for_macos

    try:
        installed = Version(str(t.get("version"))).public
    except InvalidVersion:
        return None
    wanted = target["version"]
    verify = f"lsync-port verify TREE --device mps-sim --target-torch {installed}"
    said = f"installed torch {installed}, the tree's target torch {wanted} ({target['origin']})"
    needs = min_macos(wanted)
    if facts.macos and needs and facts.macos < needs:
        # From 2.12 on torch's macOS wheels are tagged macosx_14_0: pip finds none on an older macOS.
        fits = newest_for_macos(facts.macos)
        return Check(
            "target torch",
            WARNING,
            f"{said}: torch {wanted}'s macOS wheel needs macOS {dotted(needs)} or later, and this Mac runs "
            f"{dotted(facts.macos)}: pip finds no torch {wanted} here, and verify's verdict was for a Mac "
            "that can install it.",
            f"Update macOS to {dotted(needs)} or later"
            + (
                f", or judge the newest torch this macOS installs: lsync-port verify TREE --device mps-sim "
                f"--target-torch {fits}"
                if fits
                else ""
            ),
        )
    if installed == wanted:
        return Check("target torch", OK, f"{said}: verify's mps-sim verdict is for this torch.")
    missing = kernels_missing(installed, wanted)
    if missing is None:
        return Check(
            "target torch",
            WARNING,
            f"{said}: lsync-port ships no MPS table for torch {installed}, so the verdict for {wanted} "
            "may not hold here.",
            f"{facts.python_cmd} -m pip install torch=={wanted}",
        )
    listed = f" ({len(missing)}: {listing(missing, 5)})" if missing else ""
    if Version(installed) > Version(wanted):
        gained = kernels_missing(wanted, installed) or []
        return Check(
            "target torch",
            WARNING,
            f"{said}: mps-sim's verdict was for {wanted}, not for the newer torch here, which has "
            f"{len(gained)} MPS kernels more and lacks {len(missing)} that {wanted} has{listed}.",
            f"For a verdict on this torch: {verify}; or install the pin: {facts.python_cmd} -m pip install "
            f"torch=={wanted}",
        )
    return Check(
        "target torch",
        WARNING,
        f"{said}: older than the target, so mps-sim's verdict may not hold here; ops with an MPS kernel in "
        f"{wanted} but none here{listed or ': none'}.",
        f"{facts.python_cmd} -m pip install torch=={wanted} (or {verify})",
    )


@reads_facts
def check_mps(facts: ProbeFacts) -> Check:
    t = facts.torch
    built, available = value(t.get("mps_built")), value(t.get("mps_available"))
    answers = f"torch.backends.mps.is_built() {built}, is_available() {available}"
    if not facts.is_mac:
        if not t.get("ok"):
            return Check("mps", OK, "not a Mac: MPS does not apply (and torch does not import).")
        return Check("mps", OK, f"MPS not available: not a Mac ({answers}).")
    if not t.get("ok"):
        return Check("mps", WARNING, "not checked: torch does not import (see torch).", "Install torch first.")
    p = facts.section("probe", "platform")
    if built and available:
        memory = value(t.get("mps_recommended_max_memory"))
        extra = f"; Metal recommends at most {size(memory)} for this process" if memory else ""
        return Check("mps", OK, f"MPS built and available ({answers}){extra}.")
    if not built:
        return Check(
            "mps",
            BLOCKER,
            f"this torch build has no MPS ({answers}).",
            f"{facts.python_cmd} -m pip install --force-reinstall torch torchvision (PyPI's macOS arm64 wheels "
            "have MPS).",
        )
    if p.get("rosetta"):
        reason, fix = "this Python runs under Rosetta (x86_64)", "Use an arm64 Python (see platform)."
    elif p.get("machine") != "arm64":
        return Check("mps", WARNING, f"MPS not available on this Intel Mac ({answers}).", "Use an Apple Silicon Mac.")
    elif (facts.macos or (99,)) < catalog.MPS_MIN_MACOS:
        reason, fix = "macOS is older than 12.3", "Update macOS."
    else:
        reason, fix = (
            "a virtual machine without Metal, or a torch too old for this macOS",
            "Run on the host; update torch.",
        )
    return Check("mps", BLOCKER, f"MPS is built but not available: {reason} ({answers}).", fix)


@reads_facts
def check_cuda(facts: ProbeFacts) -> Check | None:
    t = facts.torch
    if not t.get("ok"):
        return None
    if facts.is_mac:
        return Check("cuda", OK, "not available (there is no CUDA on macOS); the ported tree does not need it.")
    devices = value(t.get("cuda_devices")) or []
    if facts.cuda_available:
        listed = "; ".join(
            f"{d.get('name')} ({size(d.get('total_memory'))}, "
            f"compute capability {dotted(tuple(d.get('capability') or ()))})"
            for d in devices
        )
        return Check("cuda", OK, f"CUDA {t.get('cuda_build') or ''} available: {listed or 'devices unknown'}.")
    if t.get("cuda_build"):
        visible = facts.section("probe", "env").get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return Check(
            "cuda",
            WARNING,
            f"torch is a CUDA {t['cuda_build']} build but sees no GPU{hint}.",
            "Check `nvidia-smi` and the driver; unset CUDA_VISIBLE_DEVICES if it hides the GPU.",
        )
    return Check("cuda", OK, "not available (a CPU-only torch build, no GPU).")


@reads_facts
def check_device(facts: ProbeFacts) -> Check | None:
    h = facts.section("probe", "helper")
    if not h:
        return None
    whose = "the tree's runtime helper" if facts.raw.get("helper_source") == "tree" else "lsync-port's runtime helper"
    env = facts.section("probe", "env")
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
    if kind == "mps" and not facts.mps_available:
        return Check("device", BLOCKER, f"{picked}, but MPS is not available here.", "Unset LATENTSYNC_DEVICE.")
    if kind == "cuda" and not facts.cuda_available:
        return Check("device", BLOCKER, f"{picked}, but CUDA is not available here.", "Unset LATENTSYNC_DEVICE.")
    if kind == "mps" and dtype == "bfloat16" and (facts.macos or (0,)) < catalog.MPS_BF16_MACOS:
        return Check(
            "device",
            BLOCKER,
            f"{picked}: bfloat16 on MPS needs macOS 14 (this is {dotted(facts.macos)}).",
            "Set LATENTSYNC_DTYPE=float16, or unset it.",
        )
    if kind == "cpu":
        tree = facts.raw.get("tree") or {}
        if tree.get("cpu_face_detection_refused"):
            return Check(
                "device",
                BLOCKER,
                f"{picked}; on cpu this tree's ImageProcessor has no face detector and raises "
                "NotImplementedError('Using the CPU for face detection is not supported').",
                "Run on mps or cuda: on cpu this tree cannot detect faces.",
            )
        if forced and (facts.mps_available or facts.cuda_available):
            return Check("device", WARNING, f"{picked}: the GPU here is left unused.", "Unset LATENTSYNC_DEVICE.")
        return Check(
            "device",
            WARNING,
            f"{picked}: no MPS or CUDA here, so inference would run on the CPU, far slower than on a GPU.",
            "Run on an Apple Silicon Mac (mps) or an NVIDIA GPU (cuda).",
        )
    return Check("device", OK, picked + ".")


@reads_facts
def check_onnxruntime(facts: ProbeFacts) -> Check:
    needs = facts.needs_insightface
    if needs is False:
        return Check("onnxruntime", OK, f"not used by LatentSync {facts.release} (no InsightFace).")
    o = facts.section("probe", "onnxruntime")
    dists = facts.installed
    py = facts.python_cmd
    if not o.get("ok"):
        fix = f"{py} -m pip install onnxruntime"
        if facts.is_mac:
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
    if facts.is_mac:
        if "CoreMLExecutionProvider" in providers:
            return Check("onnxruntime", OK, detail + "; face detection can use CoreML.")
        return Check(
            "onnxruntime",
            WARNING,
            detail + "; no CoreMLExecutionProvider, so face detection runs on the CPU (slower).",
            f"{py} -m pip install -U onnxruntime (PyPI's macOS wheels, 1.17+, include CoreML)",
        )
    if facts.cuda_available and "CUDAExecutionProvider" not in providers:
        return Check(
            "onnxruntime",
            WARNING,
            detail + "; no CUDAExecutionProvider, so face detection runs on the CPU although torch has CUDA.",
            f"{py} -m pip uninstall -y onnxruntime; {py} -m pip install onnxruntime-gpu",
        )
    return Check("onnxruntime", OK, detail + ".")


@reads_facts
def check_insightface(facts: ProbeFacts) -> Check:
    needs = facts.needs_insightface
    if needs is False:
        return Check("insightface", OK, f"not used by LatentSync {facts.release}.")
    i = facts.section("probe", "insightface")
    if i.get("ok"):
        return Check("insightface", OK, f"insightface {i.get('version') or '?'} imports.")
    error = str(i.get("error") or "unknown error")
    fix = f"{facts.python_cmd} -m pip install insightface"
    if "No module named 'insightface'" in error:
        fix += (
            " (upstream pins 0.7.3, an sdist: it needs a C++ compiler, on a Mac `xcode-select --install`)"
            if facts.is_mac
            else " (upstream pins 0.7.3, an sdist that needs a C++ compiler)"
        )
    return Check(
        "insightface",
        BLOCKER if needs else WARNING,
        f"insightface does not import ({error}); LatentSync 1.6+ detects faces with it.",
        fix,
    )


@reads_facts
def check_ffmpeg(facts: ProbeFacts) -> Check:
    f = facts.section("probe", "ffmpeg")
    if f.get("path"):
        return Check("ffmpeg", OK, f"ffmpeg on PATH: {f['path']}.")
    needed = (
        "LatentSync runs `ffmpeg` by name (util.check_ffmpeg_installed, the 25 fps conversion in read_video, "
        "the final mux)"
    )
    exe = f.get("imageio_ffmpeg")
    install = (
        "brew install ffmpeg" if facts.is_mac else "apt-get install ffmpeg (or conda install -c conda-forge ffmpeg)"
    )
    if exe:
        return Check(
            "ffmpeg",
            BLOCKER,
            f"ffmpeg is not on PATH; imageio-ffmpeg has one at {exe}, but {needed}.",
            f"Link it into a folder on PATH: ln -s {exe} /usr/local/bin/ffmpeg (or {install})",
        )
    return Check("ffmpeg", BLOCKER, f"no ffmpeg on PATH and no imageio-ffmpeg; {needed}.", install)


@reads_facts
def check_probe(facts: ProbeFacts) -> Check | None:
    error = facts.raw.get("probe_error")
    if not error:
        return None
    return Check(
        "interpreter",
        BLOCKER,
        f"could not inspect {facts.raw.get('python')}: {error}",
        "Give --python a working Python 3 interpreter (the one that runs the tree).",
    )
