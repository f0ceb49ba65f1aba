"""Smoke inference inside a (ported) LatentSync tree. Runs in a child process, never in lsync-port's.

    python harness.py SPEC.json

Standalone on purpose: it runs under the interpreter that runs the tree (`--python`), which need
not have lsync-port installed. It imports the tree's own modules from the tree's root, runs the
checks in order, and appends one JSON line per event to the spec's `events` file:

    {"event": "start", "check": "decode"}
    {"event": "end", "check": "decode", "status": "pass"|"fail"|"skip", "seconds": 0.4,
     "detail": "...", "peak_memory": 123456789, "data": {...}}

With `"simulate": "mps"` in the spec (`--device mps-sim`), mps_sim.py (next to this file, loaded by
path) is installed first and, after every check, the findings so far are appended too:

    {"event": "findings", "findings": [{"kind": ..., "level": ..., "op": ..., "site": ...}], "stats": {...}}

A check that fails ends the run: each later check needs what the earlier ones built. The parent
(runner.py) enforces the time limit and reports a crash or hang by the last check that started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import shutil
import sys
import time
import traceback
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_protocol():
    """payload/protocol.py, loaded by path: the one sibling that cannot come through its own loader."""
    import importlib.util

    if "lsync_port_protocol" not in sys.modules:
        module_spec = importlib.util.spec_from_file_location("lsync_port_protocol", HERE.parent / "protocol.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["lsync_port_protocol"] = module
        module_spec.loader.exec_module(module)
    return sys.modules["lsync_port_protocol"]


protocol = _load_protocol()

HARNESS_VERSION = "1"
FPS = 25
SAMPLE_RATE = 16000
EVENTS: Path | None = None  # the spec's event stream, set by main (or a test's driver)


def emit(record) -> None:
    protocol.write_event(EVENTS, record)


class CheckFailed(Exception):
    """A check's failure with the reason a person should read."""


def peak_memory(device: str) -> int | None:
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    if torch is not None and device == "mps" and torch.backends.mps.is_available():
        return int(torch.mps.driver_allocated_memory())
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        return None


def run_check(name: str, function, spec, state) -> bool:
    emit(protocol.CheckStart(name))
    started = time.perf_counter()
    status, detail, data = "pass", "", {}
    try:
        result = function(spec, state)
        if isinstance(result, tuple):
            detail, data = result
        elif isinstance(result, str):
            detail = result
    except CheckFailed as failure:
        status, detail = "fail", str(failure)
    except SkipCheck as skip:
        status, detail = "skip", str(skip)
    except BaseException as error:  # the tree's own code failed: report its error, not ours
        status = "fail"
        detail = f"{type(error).__name__}: {error}"
        data = {"traceback": _tree_traceback(error, spec.tree)}
        if isinstance(error, KeyboardInterrupt):
            raise
    seconds = round(time.perf_counter() - started, 3)
    emit(protocol.CheckEnd(name, status, seconds, detail, peak_memory(spec.device), data))
    return status != "fail"


class SkipCheck(Exception):
    pass


def _tree_traceback(error: BaseException, tree: str) -> list[str]:
    """The frames of the traceback that lie in the tree: where its code failed, file:line."""
    frames = traceback.extract_tb(error.__traceback__)
    inside = [
        f"{Path(f.filename).resolve().relative_to(tree)}:{f.lineno} in {f.name}"
        for f in frames
        if _inside(f.filename, tree)
    ]
    return inside[-6:] or [f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-3:]]


def _inside(filename: str, tree: str) -> bool:
    try:
        Path(filename).resolve().relative_to(tree)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# Inputs that verify makes: a clip with a face-like pattern and an audio track.


def face_landmarks(width: int, height: int):
    """Where the synthetic face's brows, nose and mouth are in every frame."""
    return {
        "left_brow": (0.36 * width, 0.36 * height),
        "right_brow": (0.64 * width, 0.36 * height),
        "nose": (0.5 * width, 0.52 * height),
        "mouth": (0.5 * width, 0.68 * height),
    }


def make_clip(path: Path, frames: int, size: int) -> None:
    import numpy as np

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    marks = face_landmarks(size, size)
    base = np.zeros((size, size, 3), np.float32) + np.array([40, 60, 90], np.float32)  # background
    face = ((xs - size / 2) / (0.32 * size)) ** 2 + ((ys - 0.52 * size) / (0.42 * size)) ** 2 <= 1
    base[face] = (205, 160, 130)  # skin
    for key in ("left_brow", "right_brow"):
        cx, cy = marks[key]
        base[(abs(xs - cx) < 0.07 * size) & (abs(ys - cy) < 0.015 * size + 1)] = (60, 40, 30)
    video = []
    for index in range(frames):
        frame = base.copy()
        cx, cy = marks["mouth"]
        opening = 0.02 + 0.03 * (1 + math.sin(index / 2)) / 2  # the mouth opens and closes
        mouth = ((xs - cx) / (0.12 * size)) ** 2 + ((ys - cy) / (opening * size + 1)) ** 2 <= 1
        frame[mouth] = (150, 40, 50)
        video.append(frame.clip(0, 255).astype(np.uint8))
    _write_video(path, np.stack(video), FPS)


def _write_video(path: Path, frames, fps: int) -> None:
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1, quality=9)
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()


def make_audio(path: Path, seconds: float) -> None:
    samples = int(seconds * SAMPLE_RATE)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        data = bytearray()
        for n in range(samples):
            # A vowel-like sound: a 140 Hz voice with two formants, and syllables at 4 Hz.
            t = n / SAMPLE_RATE
            envelope = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * t)
            value = envelope * (
                0.5 * math.sin(2 * math.pi * 140 * t)
                + 0.3 * math.sin(2 * math.pi * 700 * t)
                + 0.2 * math.sin(2 * math.pi * 1200 * t)
            )
            data += int(max(-1.0, min(1.0, value)) * 20000).to_bytes(2, "little", signed=True)
        handle.writeframes(bytes(data))


def read_video_frames(path: Path):
    """Frames and fps of a video, read independently of the tree (imageio-ffmpeg)."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), float(meta["fps"])


# ----------------------------------------------------------------------------------------------
# The synthetic stand-ins: tiny random weights from the tree's own configs, and a landmark source.


class StandInFaceDetector:
    """Replaces InsightFace in synthetic mode: the face is where verify drew it, every frame.

    Returns a box and InsightFace's 106-point layout, with every point at the face centre except
    the brows and the nose, which LatentSync uses for alignment."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, frame, *args, **kwargs):
        import numpy as np

        height, width = frame.shape[:2]
        marks = face_landmarks(width, height)
        points = np.tile(np.array([[width / 2, height / 2]], np.float32), (106, 1))
        points[[43, 48, 49, 50, 51]] = marks["left_brow"]
        points[101:106] = marks["right_brow"]
        points[[74, 77, 83, 86]] = marks["nose"]
        box = [int(0.18 * width), int(0.1 * height), int(0.82 * width), int(0.94 * height)]
        return box, points


def shrink_unet_config(model: dict) -> dict:
    """Same block types and layout, small widths: a UNet that builds and runs in seconds."""
    small = dict(model)
    levels = len(small.get("block_out_channels", [32, 64]))
    small["block_out_channels"] = [32] * levels if levels > 2 else [32, 64]
    small["layers_per_block"] = 1
    if "norm_num_groups" in small:
        small["norm_num_groups"] = 8
    if "attention_head_dim" in small:
        small["attention_head_dim"] = 8
    kwargs = small.get("motion_module_kwargs")
    if isinstance(kwargs, dict) and "num_attention_heads" in kwargs:
        small["motion_module_kwargs"] = {**kwargs, "num_attention_heads": 4}
    return small


def synthetic_weights(spec, config) -> dict:
    """Build (or reuse from the cache) the tiny checkpoints; returns their paths."""
    import torch

    tree = Path(spec.tree)
    key = hashlib.sha256(
        json.dumps([HARNESS_VERSION, spec.seed, _plain(config)], sort_keys=True, default=str).encode()
        + _file_digest(tree / "latentsync/models/unet.py")
        + _file_digest(tree / "latentsync/whisper/whisper/model.py")
    ).hexdigest()[:16]
    folder = Path(spec.cache) / key
    paths = {"unet": folder / "unet.pt", "whisper": folder / "whisper.pt", "vae": folder / "vae"}
    if all(p.exists() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()} | {"cached": True}
    # This process's own partial folder: two verify runs (parallel tests, two terminals) may build
    # the same key at once, and neither may delete or read the other's half-written folder.
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.manual_seed(spec.seed)

    unet_module = importlib.import_module("latentsync.models.unet")
    unet, _ = unet_module.UNet3DConditionModel.from_pretrained(shrink_unet_config(config["model"]), "", device="cpu")
    _randomise(unet, torch)
    torch.save({"state_dict": unet.state_dict(), "global_step": 0}, partial / "unet.pt")

    whisper_model = importlib.import_module("latentsync.whisper.whisper.model")
    fields = {f.name for f in dataclasses.fields(whisper_model.ModelDimensions)}
    tiny = {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": config["model"].get("cross_attention_dim", 384),
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51865,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 1,
    }
    dims = {k: v for k, v in tiny.items() if k in fields}
    whisper = whisper_model.Whisper(whisper_model.ModelDimensions(**dims))
    torch.save({"dims": dims, "model_state_dict": whisper.state_dict()}, partial / "whisper.pt")

    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    vae.save_pretrained(partial / "vae", safe_serialization=False)
    try:
        partial.rename(folder)
    except OSError:  # another run finished the same key first (or left an incomplete folder)
        if not all(p.exists() for p in paths.values()):
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
    shutil.rmtree(partial, ignore_errors=True)
    return {k: str(v) for k, v in paths.items()} | {"cached": False}


def _randomise(module, torch) -> None:
    # Zero-initialised output layers (common in diffusion UNets) would make every output zero and
    # hide real bugs; small random values everywhere keep the numbers alive.
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.02)


def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest() if path.exists() else b""


def accepted(function, kwargs: dict) -> dict:
    """The keyword arguments `function` takes (all of them when it has **kwargs): releases differ
    (1.0's Audio2Feature has no audio_feat_length, its pipeline call no mask_image_path)."""
    import inspect

    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters}


def pipeline_arguments(pipeline_class, vae, audio_encoder, unet, scheduler) -> dict:
    """LipsyncPipeline's constructor by release: 1.0 also takes an audio_processor (None there),
    1.5 names the UNet `denoising_unet`."""
    import inspect

    parameters = inspect.signature(pipeline_class.__init__).parameters
    arguments = {"vae": vae, "audio_encoder": audio_encoder, "scheduler": scheduler}
    arguments["denoising_unet" if "denoising_unet" in parameters else "unet"] = unet
    if "audio_processor" in parameters:
        arguments["audio_processor"] = None
    return arguments


def _plain(value):
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return value


# ----------------------------------------------------------------------------------------------
# The checks


def check_device(spec, state):
    import torch

    device = spec.device
    state["torch"] = torch
    kind = device.split(":")[0]
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            built = bool(backend is not None and backend.is_built())
            raise CheckFailed(
                "no MPS device here: torch.backends.mps.is_available() is False "
                + (
                    "(this torch has MPS built in, but this machine is not Apple Silicon or macOS is older than 12.3)"
                    if built
                    else "(this torch was built without MPS)"
                )
                + "; run with --device cpu (this machine's CPU) or --device mps-sim (the MPS code path, "
                "simulated on the CPU)"
            )
    elif kind == "cuda" and not torch.cuda.is_available():
        raise CheckFailed("no CUDA device here: torch.cuda.is_available() is False; run with --device cpu")
    elif kind not in ("cpu", "cuda", "mps"):
        raise CheckFailed(f"unknown device {device!r}")
    simulator = state.get("simulator")
    if simulator is not None:
        counts = simulator.table.get("counts", {})
        kernels, overloads = counts.get("mps", 0), sum(counts.values())
        target = simulator.table.get("torch", torch.__version__)  # the tree's target torch, not this one
        return (
            f"simulated on the CPU, checked against the MPS kernels of torch {target} "
            f"({kernels} of {overloads} aten overloads have one) on macOS {simulator.stats()['macos']}, "
            f"{simulator.stats()['mac_memory_bytes'] // 2**30} GB of memory: "
            f"torch {torch.__version__} on mps-sim",
            {"simulated": True, "support": counts, **_stack_said(spec, state)},
        )
    return f"torch {torch.__version__} on {device}", _stack_said(spec, state)


def _stack_said(spec, state) -> dict:
    """The host stack modelled, and what this interpreter could not model of it (the device check's data)."""
    stack = spec.stack
    return {"stack": stack["name"], "stack_notes": state.get("stack_notes") or []} if stack else {}


# Import names whose distribution is called something else.
def _distributions():
    """verify/distributions.py: which distribution installs an import name."""
    return protocol.load_sibling(HERE / "distributions.py", "lsync_port_distributions")


def missing_dependency(error: ImportError, tree: Path) -> str:
    """One line: what the interpreter lacks, who imports it, and the command that installs it."""
    from importlib import metadata

    module = (error.name or "").split(".")[0]
    if not module:
        return f"{type(error).__name__}: {error}"
    names = _distributions()
    distribution = names.distribution_for(module)
    requirement = names.requirement_for(distribution, tree)
    where = _tree_traceback(error, str(tree))[-1].split(" in ")[0]
    install = f"{sys.executable} -m pip install '{requirement}'"
    if isinstance(error, ModuleNotFoundError):
        return f"{sys.executable} lacks {module} (imported by {where}); install it: {install}"
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        version = "?"
    return (
        f"{distribution} {version} in {sys.executable} does not provide what {where} imports ({error}); "
        f"the tree wants {requirement}: {install}"
    )


def check_imports(spec, state):
    modules = {}
    for name in spec.modules:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as error:
            if error.name and error.name.split(".")[0] in ("latentsync", "scripts"):
                raise  # the tree itself is broken: report its own error
            raise CheckFailed(missing_dependency(error, Path(spec.tree))) from error
    state["modules"] = modules
    try:
        helper = importlib.import_module(spec.runtime_module)
    except ModuleNotFoundError:
        state["helper"] = None
        state["dtype"] = state["torch"].float32 if spec.device == "cpu" else state["torch"].float16
        return f"{len(modules)} modules imported; no runtime helper ({spec.runtime_module}): the tree is not ported"
    state["helper"] = helper
    resolved = helper.device()
    if resolved != spec.device:
        raise CheckFailed(f"the runtime helper resolves to {resolved!r}, not {spec.device!r}")
    dtype = helper.dtype(resolved)
    state["dtype"] = dtype
    return (
        f"{len(modules)} modules imported; runtime helper: device {resolved}, dtype {str(dtype).replace('torch.', '')}"
    )


def check_decode(spec, state):
    work = Path(spec.work)
    clip = work / "input.mp4"
    make_clip(clip, spec.frames, state["resolution"])
    make_audio(work / "input.wav", spec.frames / FPS)
    state["clip"], state["audio"] = clip, work / "input.wav"
    util = importlib.import_module("latentsync.utils.util")
    reader = getattr(util, "read_video_decord", None)
    frames = reader(str(clip)) if reader else util.read_video(str(clip), use_decord=True)
    frames = getattr(frames, "asnumpy", lambda: frames)()
    if len(frames) != spec.frames:
        raise CheckFailed(f"decoded {len(frames)} frames, expected {spec.frames}")
    if tuple(frames.shape[1:3]) != (state["resolution"], state["resolution"]):
        raise CheckFailed(
            f"decoded frames of shape {frames.shape[1:]}, expected {state['resolution']}x{state['resolution']}"
        )
    import decord

    size = f"{frames.shape[2]}x{frames.shape[1]}"
    return f"{len(frames)} frames {size} through the tree's decord path (decord {decord.__version__})"


def load_audio_encoder(spec, state, device: str):
    """The tree's Audio2Feature with the checkpoint's whisper, on `device`."""
    audio_module = importlib.import_module("latentsync.whisper.audio2feature")
    config = state["config"]
    options = {
        "model_path": state["weights"]["whisper"],
        "device": device,
        "num_frames": config["data"]["num_frames"],
        "audio_feat_length": list(config["data"].get("audio_feat_length", [2, 2])),
    }
    return audio_module.Audio2Feature(**accepted(audio_module.Audio2Feature.__init__, options))


def check_audio(spec, state):
    torch = state["torch"]
    config = state["config"]
    encoder = load_audio_encoder(spec, state, spec.device)
    state["audio_encoder"] = encoder
    features = encoder.audio2feat(str(state["audio"]))
    chunks = encoder.feature2chunks(feature_array=features, fps=FPS)
    if len(chunks) < spec.frames:
        raise CheckFailed(f"{len(chunks)} audio chunks for {spec.frames} frames")
    stacked = torch.stack([torch.as_tensor(c) for c in chunks[: spec.frames]]).float()
    if not torch.isfinite(stacked).all():
        raise CheckFailed("audio features contain NaN or inf")
    state["audio_chunks"] = stacked
    if state["whole_chunks"]:
        # 1.0, 1.5: whole chunks of num_frames, as long as both video and audio last.
        num_frames = config["data"]["num_frames"]
        state["expected_frames"] = min(spec.frames, len(chunks)) // num_frames * num_frames
    else:
        # 1.6 and later follow the audio: one frame per audio chunk (the video loops).
        state["expected_frames"] = len(chunks)
    return f"{len(chunks)} chunks of shape {tuple(stacked.shape[1:])}"


def load_unet(spec, state, device: str, dtype):
    """The tree's UNet3DConditionModel from the checkpoint, loaded on the CPU, then moved to `device` in `dtype`."""
    unet_module = importlib.import_module("latentsync.models.unet")
    model = state["config"]["model"]
    model_config = model if spec.weights == "real" else shrink_unet_config(model)
    unet, _ = unet_module.UNet3DConditionModel.from_pretrained(model_config, state["weights"]["unet"], device="cpu")
    return unet.to(device, dtype=dtype).eval()


def check_unet(spec, state):
    torch = state["torch"]
    config = state["config"]
    dtype = state["dtype"]
    unet = load_unet(spec, state, spec.device, dtype)
    state["unet"] = unet
    latent = state["resolution"] // 8
    frames = min(spec.frames, config["data"]["num_frames"])
    generator = torch.Generator().manual_seed(spec.seed)
    sample = torch.randn((1, unet.config.in_channels, frames, latent, latent), generator=generator)
    context = state["audio_chunks"][:frames][None]
    state["unet_inputs"] = (sample, context)
    with torch.no_grad():
        out = unet(
            sample.to(spec.device, dtype),
            torch.tensor(500, device=spec.device),
            encoder_hidden_states=context.to(spec.device, dtype),
        ).sample
    out = out.float().cpu()
    state["unet_output"] = out
    if not torch.isfinite(out).all():
        raise CheckFailed(f"UNet output contains NaN or inf in {str(dtype).replace('torch.', '')}")
    return f"output {tuple(out.shape)} in {str(dtype).replace('torch.', '')}, |mean| {out.abs().mean():.4f}"


def stand_in_face_detection(spec) -> None:
    """Synthetic weights: the fixed landmark source replaces InsightFace (see the report)."""
    image_processor = importlib.import_module("latentsync.utils.image_processor")
    if spec.weights == "synthetic" and hasattr(image_processor, "FaceDetector"):
        image_processor.FaceDetector = StandInFaceDetector


def build_pipeline(spec, state, device, dtype):
    from diffusers import AutoencoderKL, DDIMScheduler

    pipeline_module = importlib.import_module("latentsync.pipelines.lipsync_pipeline")
    stand_in_face_detection(spec)
    vae = AutoencoderKL.from_pretrained(state["weights"]["vae"], torch_dtype=dtype)
    vae.config.scaling_factor = 0.18215
    vae.config.shift_factor = 0
    scheduler = DDIMScheduler.from_pretrained(str(Path(spec.tree) / "configs"))
    unet = state["unet"] if device == spec.device else state["unet"].to(device, dtype=dtype)
    pipeline_class = pipeline_module.LipsyncPipeline
    return pipeline_class(**pipeline_arguments(pipeline_class, vae, state["audio_encoder"], unet, scheduler)).to(device)


def run_pipeline(spec, state, device, dtype, out_path):
    import random

    import numpy as np

    torch = state["torch"]
    pipeline = build_pipeline(spec, state, device, dtype)
    # The same draws whatever ran before in this process (building the synthetic weights draws from the
    # global generator): a tree that draws without the generator still gives the run of a fresh process,
    # and the parity reference kept by a cpu verify is the one a later run would compute.
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    random.seed(spec.seed)
    config = state["config"]
    generator = torch.Generator().manual_seed(spec.seed)
    arguments = {
        "video_path": str(state["clip"]),
        "audio_path": str(state["audio"]),
        "video_out_path": str(out_path),
        "video_mask_path": str(out_path).replace(".mp4", "_mask.mp4"),
        "num_frames": config["data"]["num_frames"],
        "num_inference_steps": spec.steps,
        # The tree's own (1.0 runs at 1.0: its pipeline has no guidance step).
        "guidance_scale": float((config.get("run") or {}).get("guidance_scale", 1.5)),
        "weight_dtype": dtype,
        "width": state["resolution"],
        "height": state["resolution"],
        "mask_image_path": config["data"].get("mask_image_path", "latentsync/utils/mask.png"),
        "generator": generator,
    }
    simulator = state.get("simulator")
    # Under the MPS simulator: count the stalls of the denoising loop per step (the reference run records nothing).
    watch = simulator.watch_denoising(pipeline) if simulator is not None else contextlib.nullcontext()
    with watch:
        pipeline(**accepted(type(pipeline).__call__, arguments))
    if not out_path.exists():
        raise CheckFailed(f"the pipeline finished but wrote no video at {out_path}")


def check_pipeline(spec, state):
    out = Path(spec.work) / "output.mp4"
    run_pipeline(spec, state, spec.device, state["dtype"], out)
    state["output"] = out
    return f"{spec.steps} denoising steps, wrote {out.name} ({out.stat().st_size} bytes)"


def check_output(spec, state):
    import numpy as np

    frames, fps = read_video_frames(state["output"])
    state["output_frames"] = frames
    problems = []
    expected = state.get("expected_frames", spec.frames)
    if len(frames) != expected:
        problems.append(f"{len(frames)} frames, expected {expected} (one per audio chunk)")
    if abs(fps - FPS) > 0.01:
        problems.append(f"{fps} fps, expected {FPS}")
    if not np.isfinite(frames.astype(np.float32)).all():
        problems.append("non-finite values")
    size = frames.shape[1] if len(frames) else state["resolution"]
    cx, cy = face_landmarks(size, size)["mouth"]
    half = max(2, size // 10)
    mouth = frames[:, int(cy) - half : int(cy) + half, int(cx) - 2 * half : int(cx) + 2 * half].astype(np.float32)
    mouth_mean = float(mouth.mean()) if mouth.size else 0.0
    if mouth.size == 0 or mouth_mean < 8.0:
        problems.append(f"the mouth region is black (mean {mouth_mean:.1f} of 255): the MPS black-mask symptom")
    data = {"frames": len(frames), "fps": fps, "mouth_mean": round(mouth_mean, 2)}
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{len(frames)} frames at {fps:g} fps, finite, mouth region mean {mouth_mean:.1f}/255", data


def check_preview(spec, state):
    """A contact sheet a person can look at: input and output frames, and the mouths."""
    if not spec.preview:
        raise SkipCheck("no preview path given")
    inputs, _ = read_video_frames(state["clip"])
    node = state.get("comfy_output_frames")  # a node package: what its LatentSyncNode returned
    outputs = node if node is not None else state["output_frames"]
    device = "mps-sim" if spec.simulate else spec.device
    dtype = str(state["dtype"]).replace("torch.", "")
    release = spec.release or "?"
    what = "ComfyUI LatentSyncNode output" if node is not None else f"LatentSync {release}"
    title = f"{what} | {device} | {dtype} | {spec.weights} weights | lsync-port verify"
    sheet = protocol.load_sibling(HERE / "preview.py", "lsync_port_preview")
    mouth = face_landmarks(outputs.shape[2], outputs.shape[1])["mouth"]
    path = sheet.contact_sheet(Path(spec.preview), inputs, outputs, mouth, title)
    return f"contact sheet {path}", {"path": str(path)}


def check_parity(spec, state):

    torch = state["torch"]
    cached = reference_cache(spec, state)
    if spec.device == "cpu":
        kept = ""
        if cached is not None and state["dtype"] == torch.float32 and not spec.simulate:
            if cached.store(state["output"]):  # a later verify off cpu compares with this run
                kept = "; its output is kept as the CPU float32 reference of a later verify off cpu"
        raise SkipCheck(f"cpu is the reference device{kept}")
    reuse = cached is not None and (spec.reference or {}).get("reuse") and cached.exists()
    reference, reused = (cached.path, True) if reuse else (None, False)
    if reference is None:
        reference = Path(spec.work) / "reference_cpu.mp4"
        run_reference(spec, state, reference)
        if cached is not None:
            cached.store(reference)
    ref_frames, _ = read_video_frames(reference)
    frames = state["output_frames"]
    reused_note = (
        f"; the CPU float32 reference was reused from an earlier verify of the same tree and inputs ({reference})"
        if reused
        else ""
    )
    if ref_frames.shape != frames.shape:
        raise CheckFailed(
            f"output shape {frames.shape} differs from the CPU float32 run's {ref_frames.shape}{reused_note}"
        )
    psnr, max_error = frame_error(frames, ref_frames)
    data = {
        "max_abs_error": max_error,
        "psnr": psnr,
        "reference": "reused" if reused else "computed",
        "reference_file": str(reference) if reused else None,
    }
    if psnr < spec.min_psnr:
        raise CheckFailed(
            f"differs from the CPU float32 run: PSNR {psnr:.1f} dB < {spec.min_psnr} dB, "
            f"max abs error {max_error:.0f}{reused_note}"
        )
    how = " (reference reused from an earlier verify of the same tree and inputs)" if reused else ""
    return f"vs CPU float32{how}: PSNR {psnr:.1f} dB, max abs error {max_error:.0f}/255", data


def frame_error(frames, reference) -> tuple[float, float]:
    """(PSNR in dB, largest absolute error) of uint8 frames against the reference's. The PSNR is of
    the mean of the squared differences, so an error that cancels out on average (a drift up in some
    pixels, down in others) or sits in a few pixels still counts in full."""
    import numpy as np

    diff = frames.astype(np.float32) - reference.astype(np.float32)
    mse = float((diff**2).mean())
    psnr = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return psnr, float(np.abs(diff).max())


def run_reference(spec, state, out_path: Path) -> None:
    """The CPU float32 run of the same inputs, computed as a plain cpu verify computes it: the UNet and
    the audio encoder loaded afresh in float32 on the CPU (the device's copies were rounded to its dtype)."""
    torch = state["torch"]
    state["unet"] = None  # the device's copy: its memory is needed for the float32 one
    simulator = state.get("simulator")
    # Under the MPS simulator the reference run records no findings: only the mps run is judged.
    with simulator.paused() if simulator is not None else contextlib.nullcontext():
        state["unet"] = load_unet(spec, state, "cpu", torch.float32)
        state["audio_encoder"] = load_audio_encoder(spec, state, "cpu")
        run_pipeline(spec, state, "cpu", torch.float32, out_path)


# What a CPU float32 run's output depends on beyond the tree, the inputs and the weights: the
# interpreter's packages on the inference path (any that is installed).
REFERENCE_PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "diffusers",
    "transformers",
    "accelerate",
    "huggingface-hub",
    "numpy",
    "scipy",
    "eva-decord",
    "decord",
    "opencv-python",
    "opencv-python-headless",
    "kornia",
    "imageio",
    "imageio-ffmpeg",
    "omegaconf",
    "einops",
    "librosa",
    "soundfile",
    "insightface",
    "onnxruntime",
    "mediapipe",
    "face-alignment",
    "pillow",
)


class ReferenceCache:
    """The CPU float32 reference of one tree and its inputs: a plain cpu verify's output video, kept so
    that a verify off cpu (mps-sim above all) need not run the pipeline a second time. The key covers
    everything that run's numbers depend on that verify can see (see `reference_key`)."""

    def __init__(self, folder: Path, key: str, inputs: dict):
        self.folder, self.key, self.inputs = folder, key, inputs
        self.path = folder / f"{key}.mp4"

    def exists(self) -> bool:
        return self.path.is_file() and (self.folder / f"{self.key}.json").is_file()

    def store(self, video: Path) -> bool:
        """Keep `video` as this key's reference; False when the cache cannot take it (full disk,
        read-only home): keeping is an optimisation, never a reason for verify to fail."""
        partial = self.folder / f"{self.key}.{os.getpid()}.partial"
        facts_partial = self.folder / f"{self.key}.json.{os.getpid()}.partial"
        facts = json.dumps({"key": self.key, "stored": time.time(), "inputs": self.inputs}, indent=1, default=str)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, partial)
            os.replace(partial, self.path)
            facts_partial.write_text(facts)
            os.replace(facts_partial, self.folder / f"{self.key}.json")
        except OSError:
            for leftover in (partial, facts_partial):
                with contextlib.suppress(OSError):  # the folder itself may be what failed
                    leftover.unlink()
            return False
        return True


def reference_cache(spec, state) -> ReferenceCache | None:
    """The reference's place in the cache (None when the runner gave none). A fresh reference
    (--fresh-reference) is kept there too, replacing the one it was not compared with."""
    given = spec.reference or {}
    if not given.get("folder"):
        return None
    inputs = reference_key(spec, state)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return ReferenceCache(Path(given["folder"]), key, inputs)


def reference_key(spec, state) -> dict:
    """Everything the CPU float32 run's output depends on that verify can see: the tree (its files'
    digest, from the runner), this harness's folder and lsync-port, the inputs verify makes (frames, size,
    steps, seed), the weights (their files' sizes and times), the interpreter and its packages, the
    torch thread count (it changes the order of float32 sums), the ffmpeg that encodes the video,
    and the LATENTSYNC_* settings the runtime helper reads."""
    from importlib import metadata

    torch = state["torch"]
    given = spec.reference or {}
    versions = {}
    for name in REFERENCE_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    weights = {}
    for name in ("unet", "whisper", "vae"):
        path = Path(state["weights"][name])
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        weights[name] = [str(path), [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]]
    ffmpeg = shutil.which("ffmpeg")
    ffmpeg = os.path.realpath(ffmpeg) if ffmpeg else None  # not the per-run link _ffmpeg_on_path makes
    return {
        "tree_digest": given.get("tree_digest"),
        "tool_version": given.get("tool_version"),
        # Every file of verify's payload: an edit anywhere in it may change the reference run.
        "harness": [hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(HERE.glob("*.py"))],
        "inputs": [spec.frames, state["resolution"], spec.steps, spec.seed, spec.config, spec.weights],
        "weights": weights,
        "python": [sys.executable, sys.version],
        "packages": versions,
        "threads": torch.get_num_threads(),
        "ffmpeg": [ffmpeg, os.stat(ffmpeg).st_size, os.stat(ffmpeg).st_mtime_ns] if ffmpeg else None,
        "environment": sorted(
            (k, v) for k, v in os.environ.items() if k.startswith("LATENTSYNC_") and k != "LATENTSYNC_DEVICE"
        ),
    }


def load_config(spec, state):
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(Path(spec.tree) / spec.config), resolve=True)
    state["config"] = config
    state["resolution"] = int(spec.resolution or config["data"]["resolution"])
    # Before InsightFace (1.0, 1.5) the pipeline runs whole chunks of num_frames and drops the rest:
    # the clip must hold one chunk at least, or nothing is generated.
    state["whole_chunks"] = release_fact(spec, "whole_chunks")
    if state["whole_chunks"]:
        spec.frames = max(spec.frames, int(config["data"]["num_frames"]))


def release_fact(spec, key: str):
    """A fact of the tree's release (patches/upstreams.toml, handed over in the spec by verify's
    runner). For a tree of no known release, what its files tell where they can: the face
    detector and the chunking came with latentsync/utils/face_detector.py (1.6)."""
    facts = spec.release_facts or {}
    if not facts.get("detected") and key in ("whole_chunks", "face_detection"):
        insightface = (Path(spec.tree) / "latentsync/utils/face_detector.py").exists()
        return not insightface if key == "whole_chunks" else ("insightface" if insightface else "face_alignment")
    if key not in facts:
        raise CheckFailed(f"verify's spec lacks the release fact {key!r} (patches/upstreams.toml, [release.facts])")
    return facts[key]


def whisper_model(spec, config) -> str:
    """The whisper model the inference script loads for this UNet config (release facts: whisper,
    whisper_by_width by cross_attention_dim)."""
    width = config["model"].get("cross_attention_dim")
    return release_fact(spec, "whisper_by_width").get(str(width), release_fact(spec, "whisper"))


def real_weights(spec, config) -> dict:
    """The tree's own checkpoints, where its inference script looks for them; refuse clearly
    when one is missing (verify cannot download them). The VAE comes from checkpoints/vae when
    the tree has one, else from the Hugging Face cache (the release's VAE repository)."""
    tree = Path(spec.tree)
    whisper = whisper_model(spec, config) + ".pt"
    wanted = {
        "unet": tree / "checkpoints" / "latentsync_unet.pt",
        "whisper": tree / "checkpoints" / "whisper" / whisper,
    }
    missing = [str(path.relative_to(tree)) for path in wanted.values() if not path.exists()]
    if missing:
        raise CheckFailed(
            f"--weights real needs {', '.join(missing)} under the tree (download them as LatentSync's README says), "
            "or use --weights synthetic"
        )
    vae = tree / "checkpoints" / "vae"
    return {k: str(v) for k, v in wanted.items()} | {
        "vae": str(vae) if vae.is_dir() else release_fact(spec, "vae"),
        "cached": True,
    }


def check_weights(spec, state):
    if spec.weights == "real":
        state["weights"] = real_weights(spec, state["config"])
        names = ", ".join(Path(state["weights"][k]).name for k in ("unet", "whisper"))
        return f"the tree's checkpoints ({names}, VAE {state['weights']['vae']}); real face detection"
    state["weights"] = synthetic_weights(spec, state["config"])
    how = "reused from the cache" if state["weights"]["cached"] else "made"
    if release_fact(spec, "face_detection") == "insightface":
        stood_in = "InsightFace"
    else:  # 1.0, 1.5: face_alignment for the crop, mediapipe's mesh for other masks
        said = state["landmarks"]
        kind = "stand-in modules" if set(said.values()) == {"stand-in module"} else f"mediapipe: {said['mediapipe']}"
        stood_in = f"face_alignment and mediapipe ({kind})"
    return (
        f"synthetic tiny checkpoints {how}; face detection: a fixed landmark source stands in for {stood_in}",
        {"stand_ins": state.get("landmarks", {})},
    )


CHECKS = [
    ("device", check_device),
    ("import", check_imports),
    ("weights", check_weights),
    ("decode", check_decode),
    ("audio", check_audio),
    ("unet", check_unet),
    ("pipeline", check_pipeline),
    ("output", check_output),
    ("preview", check_preview),
    ("parity", check_parity),
]


def _auto_device() -> str:
    import torch

    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _ffmpeg_on_path(work: Path) -> None:
    """LatentSync runs the `ffmpeg` command; without one on PATH, use imageio-ffmpeg's binary."""
    if shutil.which("ffmpeg"):
        return
    with contextlib.suppress(ImportError, RuntimeError, OSError):
        import imageio_ffmpeg

        folder = work / "bin"
        folder.mkdir(exist_ok=True)
        link = folder / "ffmpeg"
        if not link.exists():
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def main(spec_path: str) -> int:
    global EVENTS
    spec = protocol.Spec.read(spec_path)
    EVENTS = Path(spec.events)
    tree = spec.tree
    os.chdir(tree)
    sys.path.insert(0, tree)
    state: dict = {}
    if spec.simulate == "mps":
        # Before anything of the tree is imported: torch must already answer as an MPS machine.
        spec.device = "mps"
        try:
            state["simulator"] = _install_simulator(spec)
        except Exception as error:  # no torchgen yaml, no pyyaml...: say so as the device check
            emit(protocol.CheckStart("device"))
            detail = f"the MPS simulator could not start: {type(error).__name__}: {error}"
            if isinstance(error, ImportError) and error.name:
                distribution = _distributions().distribution_for(error.name)
                detail += f"; install it: {sys.executable} -m pip install '{distribution}'"
            emit(protocol.CheckEnd("device", "fail", 0, detail))
            return 1
    if spec.stack:
        # The host stack modelled (stacks.toml): the tree's code sees only what that Mac set-up has.
        stack_model = protocol.load_sibling(HERE / "stack_model.py", "lsync_port_stack_model")
        state["stack_notes"] = stack_model.install(tree, spec.stack)
    if spec.weights == "synthetic" and release_fact(spec, "face_detection") == "face_alignment":
        # 1.0, 1.5: face_alignment and mediapipe stood in (InsightFace's stand-in comes with the pipeline)
        landmarks = protocol.load_sibling(HERE / "landmarks.py", "lsync_port_landmarks")
        state["landmarks"] = landmarks.install(face_landmarks)
    if spec.device == "auto":
        spec.device = _auto_device()
    os.environ["LATENTSYNC_DEVICE"] = spec.device
    if (spec.stack or {}).get("ffmpeg_on_path", True):
        _ffmpeg_on_path(Path(spec.work))
    try:
        load_config(spec, state)
    except Exception as error:  # noqa: BLE001 - said as the config check's failure, with its cause
        cause = f"{type(error).__name__}: {error}"
        if isinstance(error, ImportError) and error.name:
            distribution = _distributions().distribution_for(error.name)
            cause += f"; install it: {sys.executable} -m pip install '{distribution}'"
        detail = f"cannot read {spec.config}: {cause}"
        emit(protocol.CheckEnd("config", "fail", 0, detail))
        return 1
    ok = True
    checks = CHECKS
    if spec.comfy:
        # A node package: its nodes run first after the inputs are made, as a workflow runs them on the
        # Mac (the first failure named is the node's own), then the vendored LatentSync's checks.
        at = [name for name, _ in CHECKS].index("audio")
        checks = CHECKS[:at] + _comfy_checks() + CHECKS[at:]
    for name, function in checks:
        if not ok:
            break
        ok = run_check(name, function, spec, state)
        _emit_findings(state)
    return 0 if ok else 1


def _comfy_checks():
    """A ComfyUI node package: its nodes, called as a workflow calls them (comfy_node.py)."""
    contract = protocol.load_sibling(HERE / "comfy_contract.py", "lsync_port_comfy_contract")
    nodes = protocol.load_sibling(HERE / "comfy_node.py", "lsync_port_comfy_node")
    nodes.bind(sys.modules[__name__], contract)
    return [(name, _watching_denoising(check)) for name, check in nodes.CHECKS]


def _watching_denoising(check):
    """Under the MPS simulator, a node check whose pipeline the node builds itself: its denoising steps
    are told by the diffusers DDIM scheduler class (every instance), for the stalls per step."""

    def watched(spec, state):
        simulator = state.get("simulator")
        try:
            from diffusers import DDIMScheduler
        except ImportError:
            DDIMScheduler = None  # noqa: N806 - the class, when diffusers is there
        if simulator is None or DDIMScheduler is None:
            return check(spec, state)
        with simulator.watch_scheduler_class(DDIMScheduler):
            return check(spec, state)

    return watched


def _install_simulator(spec):
    """Load mps_sim.py and hook it into torch."""
    module = protocol.load_sibling(HERE.parent / "mps_sim.py", "lsync_port_mps_sim")
    return module.install(spec.tree, Path(spec.cache).parent / "mps-support", spec.mps_table)


def _emit_findings(state) -> None:
    """The simulator's findings so far (cumulative, after every check: a crash keeps what was seen)."""
    simulator = state.get("simulator")
    if simulator is not None:
        emit(protocol.Findings(simulator.report(), simulator.stats()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
