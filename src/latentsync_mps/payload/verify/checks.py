"""verify's checks, in the order they run: each builds what the later ones need (state.State), and
a check that fails ends the run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")
distributions = protocol.load_sibling(HERE / "distributions.py")
inputs = protocol.load_sibling(HERE / "inputs.py")
pipeline = protocol.load_sibling(HERE / "pipeline.py")
reference = protocol.load_sibling(HERE / "reference.py")
release = protocol.load_sibling(HERE / "release.py")
weights = protocol.load_sibling(HERE / "weights.py")


def check_device(spec, state):
    import torch

    device = spec.device
    state.torch = torch
    kind = device.split(":")[0]
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            built = bool(backend is not None and backend.is_built())
            raise check_run.CheckFailed(
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
        raise check_run.CheckFailed("no CUDA device here: torch.cuda.is_available() is False; run with --device cpu")
    elif kind not in ("cpu", "cuda", "mps"):
        raise check_run.CheckFailed(f"unknown device {device!r}")
    simulator = state.simulator
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
    return {"stack": stack["name"], "stack_notes": state.stack_notes or []} if stack else {}


def missing_dependency(error: ImportError, tree: Path) -> str:
    """One line: what the interpreter lacks, who imports it, and the command that installs it."""
    from importlib import metadata

    module = (error.name or "").split(".")[0]
    if not module:
        return f"{type(error).__name__}: {error}"
    names = distributions
    distribution = names.distribution_for(module)
    requirement = names.requirement_for(distribution, tree)
    where = check_run.tree_traceback(error, str(tree))[-1].split(" in ")[0]
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
            raise check_run.CheckFailed(missing_dependency(error, Path(spec.tree))) from error
    state.modules = modules
    try:
        helper = importlib.import_module(spec.runtime_module)
    except ModuleNotFoundError:
        state.helper = None
        state.dtype = state.torch.float32 if spec.device == "cpu" else state.torch.float16
        return f"{len(modules)} modules imported; no runtime helper ({spec.runtime_module}): the tree is not ported"
    state.helper = helper
    resolved = helper.device()
    if resolved != spec.device:
        raise check_run.CheckFailed(f"the runtime helper resolves to {resolved!r}, not {spec.device!r}")
    dtype = helper.dtype(resolved)
    state.dtype = dtype
    return (
        f"{len(modules)} modules imported; runtime helper: device {resolved}, dtype {str(dtype).replace('torch.', '')}"
    )


def check_decode(spec, state):
    work = Path(spec.work)
    clip = work / "input.mp4"
    inputs.make_clip(clip, spec.frames, state.resolution)
    inputs.make_audio(work / "input.wav", spec.frames / inputs.FPS)
    state.clip, state.audio = clip, work / "input.wav"
    util = importlib.import_module("latentsync.utils.util")
    reader = getattr(util, "read_video_decord", None)
    frames = reader(str(clip)) if reader else util.read_video(str(clip), use_decord=True)
    frames = getattr(frames, "asnumpy", lambda: frames)()
    if len(frames) != spec.frames:
        raise check_run.CheckFailed(f"decoded {len(frames)} frames, expected {spec.frames}")
    if tuple(frames.shape[1:3]) != (state.resolution, state.resolution):
        raise check_run.CheckFailed(
            f"decoded frames of shape {frames.shape[1:]}, expected {state.resolution}x{state.resolution}"
        )
    import decord

    size = f"{frames.shape[2]}x{frames.shape[1]}"
    return f"{len(frames)} frames {size} through the tree's decord path (decord {decord.__version__})"


def check_audio(spec, state):
    torch = state.torch
    config = state.config
    encoder = pipeline.load_audio_encoder(spec, state, spec.device)
    state.audio_encoder = encoder
    features = encoder.audio2feat(str(state.audio))
    chunks = encoder.feature2chunks(feature_array=features, fps=inputs.FPS)
    if len(chunks) < spec.frames:
        raise check_run.CheckFailed(f"{len(chunks)} audio chunks for {spec.frames} frames")
    stacked = torch.stack([torch.as_tensor(c) for c in chunks[: spec.frames]]).float()
    if not torch.isfinite(stacked).all():
        raise check_run.CheckFailed("audio features contain NaN or inf")
    state.audio_chunks = stacked
    if state.whole_chunks:
        # 1.0, 1.5: whole chunks of num_frames, as long as both video and audio last.
        num_frames = config["data"]["num_frames"]
        state.expected_frames = min(spec.frames, len(chunks)) // num_frames * num_frames
    else:
        # 1.6 and later follow the audio: one frame per audio chunk (the video loops).
        state.expected_frames = len(chunks)
    return f"{len(chunks)} chunks of shape {tuple(stacked.shape[1:])}"


def check_unet(spec, state):
    torch = state.torch
    config = state.config
    dtype = state.dtype
    unet = pipeline.load_unet(spec, state, spec.device, dtype)
    state.unet = unet
    latent = state.resolution // 8
    frames = min(spec.frames, config["data"]["num_frames"])
    generator = torch.Generator().manual_seed(spec.seed)
    sample = torch.randn((1, unet.config.in_channels, frames, latent, latent), generator=generator)
    context = state.audio_chunks[:frames][None]
    state.unet_inputs = (sample, context)
    with torch.no_grad():
        out = unet(
            sample.to(spec.device, dtype),
            torch.tensor(500, device=spec.device),
            encoder_hidden_states=context.to(spec.device, dtype),
        ).sample
    out = out.float().cpu()
    state.unet_output = out
    if not torch.isfinite(out).all():
        raise check_run.CheckFailed(f"UNet output contains NaN or inf in {str(dtype).replace('torch.', '')}")
    return f"output {tuple(out.shape)} in {str(dtype).replace('torch.', '')}, |mean| {out.abs().mean():.4f}"


def check_pipeline(spec, state):
    out = Path(spec.work) / "output.mp4"
    pipeline.run_pipeline(spec, state, spec.device, state.dtype, out)
    state.output = out
    return f"{spec.steps} denoising steps, wrote {out.name} ({out.stat().st_size} bytes)"


def check_output(spec, state):
    import numpy as np

    frames, fps = inputs.read_video_frames(state.output)
    state.output_frames = frames
    problems = []
    expected = spec.frames if state.expected_frames is None else state.expected_frames
    if len(frames) != expected:
        problems.append(f"{len(frames)} frames, expected {expected} (one per audio chunk)")
    if abs(fps - inputs.FPS) > 0.01:
        problems.append(f"{fps} fps, expected {inputs.FPS}")
    if not np.isfinite(frames.astype(np.float32)).all():
        problems.append("non-finite values")
    size = frames.shape[1] if len(frames) else state.resolution
    cx, cy = inputs.face_landmarks(size, size)["mouth"]
    half = max(2, size // 10)
    mouth = frames[:, int(cy) - half : int(cy) + half, int(cx) - 2 * half : int(cx) + 2 * half].astype(np.float32)
    mouth_mean = float(mouth.mean()) if mouth.size else 0.0
    if mouth.size == 0 or mouth_mean < 8.0:
        problems.append(f"the mouth region is black (mean {mouth_mean:.1f} of 255): the MPS black-mask symptom")
    data = {"frames": len(frames), "fps": fps, "mouth_mean": round(mouth_mean, 2)}
    if problems:
        raise check_run.CheckFailed("; ".join(problems))
    return f"{len(frames)} frames at {fps:g} fps, finite, mouth region mean {mouth_mean:.1f}/255", data


def check_preview(spec, state):
    """A contact sheet a person can look at: input and output frames, and the mouths."""
    if not spec.preview:
        raise check_run.SkipCheck("no preview path given")
    clip, _ = inputs.read_video_frames(state.clip)
    node = state.comfy_output_frames  # a node package: what its LatentSyncNode returned
    outputs = node if node is not None else state.output_frames
    device = "mps-sim" if spec.simulate else spec.device
    dtype = str(state.dtype).replace("torch.", "")
    release_name = spec.release or "?"
    what = "ComfyUI LatentSyncNode output" if node is not None else f"LatentSync {release_name}"
    title = f"{what} | {device} | {dtype} | {spec.weights} weights | lsync-port verify"
    sheet = protocol.load_sibling(HERE / "preview.py")
    mouth = inputs.face_landmarks(outputs.shape[2], outputs.shape[1])["mouth"]
    path = sheet.contact_sheet(Path(spec.preview), clip, outputs, mouth, title)
    return f"contact sheet {path}", {"path": str(path)}


def check_weights(spec, state):
    if spec.weights == "real":
        state.weights = weights.real_weights(spec, state.config)
        names = ", ".join(Path(state.weights[k]).name for k in ("unet", "whisper"))
        return f"the tree's checkpoints ({names}, VAE {state.weights['vae']}); real face detection"
    state.weights = weights.synthetic_weights(spec, state.config)
    how = "reused from the cache" if state.weights["cached"] else "made"
    if release.release_fact(spec, "face_detection") == "insightface":
        stood_in = "InsightFace"
    else:  # 1.0, 1.5: face_alignment for the crop, mediapipe's mesh for other masks
        said = state.landmarks
        kind = "stand-in modules" if set(said.values()) == {"stand-in module"} else f"mediapipe: {said['mediapipe']}"
        stood_in = f"face_alignment and mediapipe ({kind})"
    return (
        f"synthetic tiny checkpoints {how}; face detection: a fixed landmark source stands in for {stood_in}",
        {"stand_ins": state.landmarks or {}},
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
    ("parity", reference.check_parity),
]
