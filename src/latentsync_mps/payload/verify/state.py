"""What verify's checks build for the checks after them: one run's state, typed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class State:
    # Set up before the checks (harness.main)
    simulator: Any = None  # --device mps-sim: the MPS simulator hooked into torch
    stack_notes: list[str] = dataclasses.field(default_factory=list)  # what could not be modelled of the host stack
    landmarks: dict[str, str] | None = None  # 1.0, 1.5 synthetic: what stood in for face_alignment and mediapipe
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the tree's UNet config, resolved
    resolution: int = 0  # the clip's side in pixels: the spec's, else the config's
    whole_chunks: bool = False  # 1.0, 1.5: the pipeline runs whole chunks of num_frames only
    # device, import
    torch: Any = None  # the torch module
    modules: dict[str, Any] = dataclasses.field(default_factory=dict)  # the tree's modules imported, by name
    helper: Any = None  # the ported tree's runtime helper module; None: the tree is not ported
    dtype: Any = None  # the torch dtype the run uses on the device
    # weights, decode, audio
    weights: dict[str, Any] = dataclasses.field(default_factory=dict)  # unet, whisper, vae paths; cached
    clip: Path | None = None  # the synthetic input video
    audio: Path | None = None  # the synthetic input audio
    audio_encoder: Any = None  # the tree's Audio2Feature
    audio_chunks: Any = None  # the audio features, one chunk per frame (a float32 tensor)
    expected_frames: int | None = None  # how many frames the pipeline's output should have
    # unet, pipeline, output
    unet: Any = None  # the tree's UNet on the device (on the CPU in float32 for the parity reference)
    unet_inputs: tuple | None = None  # (sample, audio context) the UNet check ran
    unet_output: Any = None  # what the UNet check's forward pass returned, on the CPU
    output: Path | None = None  # the pipeline's output video
    output_frames: Any = None  # its frames (uint8 array)
    # A ComfyUI node package (comfy_node.py)
    comfy_root: Path | None = None  # the ComfyUI-shaped folder made in the work folder
    comfy_package: Path | None = None  # the node package's folder inside it
    comfy_guards: Any = None  # comfy_node.Guards: network and pip refused while the nodes run
    comfy_module: Any = None  # the node package, imported
    comfy_adjusted: tuple | None = None  # (IMAGE, AUDIO) VideoLengthAdjuster returned
    comfy_output_frames: Any = None  # LatentSyncNode's frames (uint8 array)
    comfy_notes: list[str] = dataclasses.field(default_factory=list)  # names served that the node asked for
    comfy_vae_served: bool = False  # the VAE's Hub name is served from the synthetic VAE
