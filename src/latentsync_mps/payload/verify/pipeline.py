"""The tree's models and its LipsyncPipeline, loaded from the weights and run on the inputs verify
made; with synthetic weights, a fixed landmark source stands in for InsightFace."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")
inputs = protocol.load_sibling(HERE / "inputs.py")
weights = protocol.load_sibling(HERE / "weights.py")


class StandInFaceDetector:
    """Replaces InsightFace in synthetic mode: the face is where verify drew it, every frame.

    Returns a box and InsightFace's 106-point layout, with every point at the face centre except
    the brows and the nose, which LatentSync uses for alignment."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, frame, *args, **kwargs):
        import numpy as np

        height, width = frame.shape[:2]
        marks = inputs.face_landmarks(width, height)
        points = np.tile(np.array([[width / 2, height / 2]], np.float32), (106, 1))
        points[[43, 48, 49, 50, 51]] = marks["left_brow"]
        points[101:106] = marks["right_brow"]
        points[[74, 77, 83, 86]] = marks["nose"]
        box = [int(0.18 * width), int(0.1 * height), int(0.82 * width), int(0.94 * height)]
        return box, points


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


def load_audio_encoder(spec, state, device: str):
    """The tree's Audio2Feature with the checkpoint's whisper, on `device`."""
    audio_module = importlib.import_module("latentsync.whisper.audio2feature")
    config = state.config
    options = {
        "model_path": state.weights["whisper"],
        "device": device,
        "num_frames": config["data"]["num_frames"],
        "audio_feat_length": list(config["data"].get("audio_feat_length", [2, 2])),
    }
    return audio_module.Audio2Feature(**accepted(audio_module.Audio2Feature.__init__, options))


def load_unet(spec, state, device: str, dtype):
    """The tree's UNet3DConditionModel from the checkpoint, loaded on the CPU, then moved to `device` in `dtype`."""
    unet_module = importlib.import_module("latentsync.models.unet")
    model = state.config["model"]
    model_config = model if spec.weights == "real" else weights.shrink_unet_config(model)
    unet, _ = unet_module.UNet3DConditionModel.from_pretrained(model_config, state.weights["unet"], device="cpu")
    return unet.to(device, dtype=dtype).eval()


def stand_in_face_detection(spec) -> None:
    """Synthetic weights: the fixed landmark source replaces InsightFace (see the report)."""
    image_processor = importlib.import_module("latentsync.utils.image_processor")
    if spec.weights == "synthetic" and hasattr(image_processor, "FaceDetector"):
        image_processor.FaceDetector = StandInFaceDetector


def build_pipeline(spec, state, device, dtype):
    from diffusers import AutoencoderKL, DDIMScheduler

    pipeline_module = importlib.import_module("latentsync.pipelines.lipsync_pipeline")
    stand_in_face_detection(spec)
    vae = AutoencoderKL.from_pretrained(state.weights["vae"], torch_dtype=dtype)
    vae.config.scaling_factor = 0.18215
    vae.config.shift_factor = 0
    scheduler = DDIMScheduler.from_pretrained(str(Path(spec.tree) / "configs"))
    unet = state.unet if device == spec.device else state.unet.to(device, dtype=dtype)
    pipeline_class = pipeline_module.LipsyncPipeline
    return pipeline_class(**pipeline_arguments(pipeline_class, vae, state.audio_encoder, unet, scheduler)).to(device)


def run_pipeline(spec, state, device, dtype, out_path):
    import random

    import numpy as np

    torch = state.torch
    pipeline = build_pipeline(spec, state, device, dtype)
    # The same draws whatever ran before in this process (building the synthetic weights draws from the
    # global generator): a tree that draws without the generator still gives the run of a fresh process,
    # and the parity reference kept by a cpu verify is the one a later run would compute.
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    random.seed(spec.seed)
    config = state.config
    generator = torch.Generator().manual_seed(spec.seed)
    arguments = {
        "video_path": str(state.clip),
        "audio_path": str(state.audio),
        "video_out_path": str(out_path),
        "video_mask_path": str(out_path).replace(".mp4", "_mask.mp4"),
        "num_frames": config["data"]["num_frames"],
        "num_inference_steps": spec.steps,
        # The tree's own (1.0 runs at 1.0: its pipeline has no guidance step).
        "guidance_scale": float((config.get("run") or {}).get("guidance_scale", 1.5)),
        "weight_dtype": dtype,
        "width": state.resolution,
        "height": state.resolution,
        "mask_image_path": config["data"].get("mask_image_path", "latentsync/utils/mask.png"),
        "generator": generator,
    }
    simulator = state.simulator
    # Under the MPS simulator: count the stalls of the denoising loop per step (the reference run records nothing).
    watch = simulator.watch_denoising(pipeline) if simulator is not None else contextlib.nullcontext()
    with watch:
        pipeline(**accepted(type(pipeline).__call__, arguments))
    if not out_path.exists():
        raise check_run.CheckFailed(f"the pipeline finished but wrote no video at {out_path}")
