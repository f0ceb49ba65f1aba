"""The wrapper's own nodes, driven the way a ComfyUI workflow drives them (after verify's other checks).

Loaded by path by harness.py in the tree's interpreter, which runs its `watched_checks()`. The node
package is seen from a ComfyUI-shaped folder made in verify's work folder:

    <work>/ComfyUI/custom_nodes/<tree name>/   the tree's folders made again, its files linked; but
        checkpoints/                          the tree's layout, filled with the synthetic weights
        configs/unet/*.yaml                   the tree's configs with the UNet shrunk as verify's weights are

so the tree is never written to. While the nodes run: HOME is a folder of verify's (the wrapper
keeps caches and install markers there), the network is refused (a download attempt fails at
once and is reported), and `pip install` commands the node starts are recorded, not run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")
checks = protocol.load_sibling(HERE / "checks.py")
comfy_contract = protocol.load_sibling(HERE / "comfy_contract.py")
inputs = protocol.load_sibling(HERE / "inputs.py")
pipeline = protocol.load_sibling(HERE / "pipeline.py")
release = protocol.load_sibling(HERE / "release.py")
weights = protocol.load_sibling(HERE / "weights.py")


def node_view(spec, state) -> tuple[Path, Path]:
    """(ComfyUI root, node package folder) seen by the node; built once."""
    if state.comfy_package is not None:
        return state.comfy_root, state.comfy_package
    tree = Path(spec.tree)
    root = Path(spec.work) / "ComfyUI"
    package = root / "custom_nodes" / tree.name
    package.mkdir(parents=True)
    for entry in tree.iterdir():
        if entry.name not in ("checkpoints", "configs", ".lsync-port", ".git"):
            _link(entry, package / entry.name)
    checkpoints = package / "checkpoints"
    (checkpoints / "whisper").mkdir(parents=True)
    (checkpoints / "latentsync_unet.pt").symlink_to(state.weights["unet"])
    # The whisper checkpoint by the name the release facts give (patches/upstreams.toml).
    (checkpoints / "whisper" / f"{release.release_fact(spec, 'whisper')}.pt").symlink_to(state.weights["whisper"])
    (checkpoints / "vae").symlink_to(state.weights["vae"])
    _configs(tree / "configs", package / "configs")
    state.comfy_root, state.comfy_package = root, package
    return root, package


def _link(source: Path, target: Path) -> None:
    """Folders made, files linked: a path the tree's code builds as `<its folder>/../checkpoints` must
    land in the node's folder (a linked folder's `..` is the tree's own, which has no checkpoints)."""
    if source.is_dir() and not source.is_symlink():
        target.mkdir()
        for entry in source.iterdir():
            if entry.name != "__pycache__":
                _link(entry, target / entry.name)
    else:
        target.symlink_to(source)


def _configs(source: Path, target: Path) -> None:
    from omegaconf import OmegaConf

    target.mkdir()
    for entry in source.iterdir():
        if entry.name != "unet":
            (target / entry.name).symlink_to(entry)
    (target / "unet").mkdir()
    for config in sorted((source / "unet").glob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
        if isinstance(data.get("model"), dict):
            data["model"] = weights.shrink_unet_config(data["model"])
        OmegaConf.save(OmegaConf.create(data), target / "unet" / config.name)


class Guards:
    """No network, no package installs, a HOME of verify's own: what the node tried is kept."""

    def __init__(self, home: Path):
        self.home = home
        self.connections: list[str] = []
        self.installs: list[str] = []

    def install(self) -> None:
        self.home.mkdir(exist_ok=True)
        os.environ["HOME"] = str(self.home)
        os.environ["HF_HUB_OFFLINE"] = "1"
        guards = self

        def refuse(address, *args, **kwargs):
            host = address[0] if isinstance(address, tuple) else str(address)
            guards.connections.append(str(host))
            raise OSError(f"lsync-port verify allows no network (the node tried {host})")

        def no_lookup(host, *args, **kwargs):
            guards.connections.append(str(host))
            raise socket.gaierror(f"lsync-port verify allows no network (the node looked up {host})")

        socket.create_connection = refuse
        socket.getaddrinfo = no_lookup
        socket.socket.connect = lambda self, address: refuse(address)
        real_check_call, real_run = subprocess.check_call, subprocess.run

        def is_install(args) -> bool:
            words = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
            return "pip" in " ".join(words) and "install" in words

        def check_call(args, *rest, **kwargs):
            if is_install(args):
                guards.installs.append(" ".join(map(str, args)))
                return 0
            return real_check_call(args, *rest, **kwargs)

        def run(args, *rest, **kwargs):
            if is_install(args):
                guards.installs.append(" ".join(map(str, args)))
                return subprocess.CompletedProcess(args, 0, b"", b"")
            return real_run(args, *rest, **kwargs)

        subprocess.check_call, subprocess.run = check_call, run

    def said(self) -> str:
        parts = []
        if self.connections:
            parts.append(f"network refused for {', '.join(sorted(set(self.connections)))}")
        if self.installs:
            parts.append(f"{len(self.installs)} pip install(s) recorded, not run")
        return "; ".join(parts)


def _serve_whisper_by_name(package: Path, state) -> None:
    """The wrapper asks whisper for "tiny" by name, which downloads it from OpenAI on a new machine
    (checkpoints/whisper/tiny.pt is not read): the name is served from the checkpoint layout."""
    module = sys.modules.get("latentsync.whisper.whisper")
    if module is None or not hasattr(module, "_download"):
        return
    original = module._download

    def download(url, root, in_memory):
        local = package / "checkpoints" / "whisper" / os.path.basename(url)
        if local.exists():
            state.comfy_notes.append(f"whisper {os.path.basename(url)} by name: served {local.name}")
            return local.read_bytes() if in_memory else str(local)
        return original(url, root, in_memory)

    module._download = download


def _serve_vae_by_name(spec, state) -> None:
    """Some wrapper commits (556b673) load the VAE by its Hub name, a download on a new machine: with
    synthetic weights the name is served from verify's VAE (the network is refused here)."""
    if spec.weights != "synthetic" or state.comfy_vae_served:
        return
    import diffusers

    name, local = release.release_fact(spec, "vae"), str(state.weights["vae"])
    original = diffusers.AutoencoderKL.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        if str(path) == name:
            state.comfy_notes.append(f"VAE {name} by name: served the synthetic VAE")
            path = local
        return original(cls, path, *args, **kwargs)

    diffusers.AutoencoderKL.from_pretrained = classmethod(from_pretrained)
    state.comfy_vae_served = True


def _inputs(spec, state):
    """A workflow's inputs: the clip as IMAGE [frames, H, W, 3] float in 0..1, the audio as AUDIO."""
    import wave

    import numpy as np
    import torch

    frames, _ = inputs.read_video_frames(state.clip)
    images = torch.from_numpy(frames.astype(np.float32) / 255.0)
    with wave.open(str(state.audio), "rb") as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float32) / 32768
    audio = {"waveform": torch.from_numpy(samples.copy())[None, None], "sample_rate": int(rate)}
    return images, audio


def _package(spec, state):
    if state.comfy_module is None:
        root, package = node_view(spec, state)
        guards = Guards(Path(spec.work) / "home")
        guards.install()
        state.comfy_guards = guards
        try:
            state.comfy_module = comfy_contract.load_node_package(package, root)
        except comfy_contract.ContractError as error:
            raise check_run.CheckFailed(str(error)) from error
        except ImportError as error:  # what nodes.py imports that the interpreter lacks: one line
            if error.name and error.name.split(".")[0] in ("latentsync", "scripts", package.name):
                raise
            raise check_run.CheckFailed(checks.missing_dependency(error, Path(spec.tree))) from error
    return state.comfy_module, state.comfy_package / "nodes.py"


def _problems(images, audio) -> list[str]:
    return comfy_contract.image_problems(images) + comfy_contract.audio_problems(audio)


def check_adjust(spec, state):
    import torch

    module, nodes = _package(spec, state)
    cls = comfy_contract.node_class(
        module, "VideoLengthAdjuster", "adjust", {"images": "IMAGE", "audio": "AUDIO"}, ("IMAGE", "AUDIO"), nodes
    )
    images, audio = _inputs(spec, state)
    out_images, out_audio = comfy_contract.run_node(
        cls, images=images, audio=audio, mode="normal", fps=float(inputs.FPS), silent_padding_sec=0.5
    )
    problems = _problems(out_images, out_audio)
    seconds_video = len(out_images) / inputs.FPS
    seconds_audio = out_audio["waveform"].shape[-1] / out_audio["sample_rate"]
    if not problems and abs(seconds_video - seconds_audio) > 1.0 / inputs.FPS + 1e-6:
        problems.append(f"video lasts {seconds_video:.2f} s and audio {seconds_audio:.2f} s after adjusting")
    if not problems and not torch.equal(out_images[: min(len(out_images), len(images))], images[: len(out_images)]):
        problems.append("the adjusted frames are not the input frames")
    if problems:
        raise check_run.CheckFailed("VideoLengthAdjuster.adjust: " + "; ".join(problems))
    state.comfy_adjusted = (out_images, out_audio)
    return (
        f"mode normal: {len(images)} -> {len(out_images)} frames, audio {seconds_audio:.2f} s; "
        f"IMAGE {tuple(out_images.shape)} float32 on cpu",
        {"frames": len(out_images)},
    )


def check_node(spec, state):
    import numpy as np

    module, nodes = _package(spec, state)
    input_types = {
        "images": "IMAGE",
        "audio": "AUDIO",
        "seed": "INT",
        "lips_expression": "FLOAT",
        "inference_steps": "INT",
    }
    cls = comfy_contract.node_class(module, "LatentSyncNode", "inference", input_types, ("IMAGE", "AUDIO"), nodes)
    images, audio = state.comfy_adjusted or _inputs(spec, state)
    import importlib

    importlib.import_module("latentsync.whisper.whisper")
    _serve_whisper_by_name(state.comfy_package, state)
    pipeline.stand_in_face_detection(spec)
    _serve_vae_by_name(spec, state)
    out_images, out_audio = comfy_contract.run_node(
        cls, images=images, audio=audio, seed=spec.seed, lips_expression=1.5, inference_steps=spec.steps
    )
    problems = _problems(out_images, out_audio)
    if not problems and tuple(out_images.shape[1:3]) != tuple(images.shape[1:3]):
        problems.append(f"frames of {tuple(out_images.shape[1:3])}, the input's were {tuple(images.shape[1:3])}")
    if not problems and len(out_images) == 0:
        problems.append("no frames returned")
    mouth_mean = mouth_change = 0.0
    if not problems:
        frames = (out_images.numpy() * 255).astype(np.uint8)
        size = frames.shape[1]
        cx, cy = inputs.face_landmarks(frames.shape[2], size)["mouth"]
        half = max(2, size // 10)
        mouth = frames[:, int(cy) - half : int(cy) + half, int(cx) - 2 * half : int(cx) + 2 * half]
        mouth_mean = float(mouth.mean()) if mouth.size else 0.0
        if mouth_mean < 8.0:
            problems.append(f"the mouth region is black (mean {mouth_mean:.1f} of 255)")
        common = min(len(frames), len(images))  # the node may loop the frames to the audio's length
        given = (images[:common].numpy() * 255).astype(np.uint8)
        before = given[:, int(cy) - half : int(cy) + half, int(cx) - 2 * half : int(cx) + 2 * half]
        after = mouth[:common].astype(np.float32)
        mouth_change = float(np.abs(after - before.astype(np.float32)).mean()) if mouth.size else 0.0
        if not problems and mouth_change < 0.5:
            problems.append(f"the mouth region is unchanged (mean difference {mouth_change:.2f}/255): not lip-synced")
        state.comfy_output_frames = frames
    guards = state.comfy_guards
    if problems:
        said = guards.said()
        raise check_run.CheckFailed("LatentSyncNode.inference: " + "; ".join(problems) + (f" ({said})" if said else ""))
    notes = state.comfy_notes + ([guards.said()] if guards.said() else [])
    detail = (
        f"IMAGE {tuple(out_images.shape)} float32 on cpu in 0..1, mouth mean {mouth_mean:.1f}/255, "
        f"changed by {mouth_change:.1f}/255 on average; "
        f"AUDIO {tuple(out_audio['waveform'].shape)} at {out_audio['sample_rate']} Hz on cpu"
    )
    return detail + ("; " + "; ".join(notes) if notes else ""), {
        "frames": len(out_images),
        "mouth_mean": round(mouth_mean, 2),
        "mouth_change": round(mouth_change, 2),
        "network_refused": sorted(set(guards.connections)),
        "pip_installs_recorded": guards.installs,
    }


CHECKS = [("node-adjust", check_adjust), ("node", check_node)]


def watched_checks():
    """The node checks as the harness runs them: under the MPS simulator, each watches its denoising steps."""
    return [(name, _watching_denoising(check)) for name, check in CHECKS]


def _watching_denoising(check):
    """Under the MPS simulator, a node check whose pipeline the node builds itself: its denoising steps
    are told by the diffusers DDIM scheduler class (every instance), for the stalls per step."""

    def watched(spec, state):
        simulator = state.simulator
        try:
            from diffusers import DDIMScheduler
        except ImportError:
            DDIMScheduler = None  # noqa: N806 - the class, when diffusers is there
        if simulator is None or DDIMScheduler is None:
            return check(spec, state)
        with simulator.watch_scheduler_class(DDIMScheduler):
            return check(spec, state)

    return watched
