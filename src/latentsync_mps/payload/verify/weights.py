"""The weights a check loads: the tree's own checkpoints (--weights real), or tiny random ones made
from the tree's own configs and kept in a cache (--weights synthetic)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")
release = protocol.load_sibling(HERE / "release.py")

HARNESS_VERSION = "1"


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


def _plain(value):
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return value


def real_weights(spec, config) -> dict:
    """The tree's own checkpoints, where its inference script looks for them; refuse clearly
    when one is missing (verify cannot download them). The VAE comes from checkpoints/vae when
    the tree has one, else from the Hugging Face cache (the release's VAE repository)."""
    tree = Path(spec.tree)
    whisper = release.whisper_model(spec, config) + ".pt"
    wanted = {
        "unet": tree / "checkpoints" / "latentsync_unet.pt",
        "whisper": tree / "checkpoints" / "whisper" / whisper,
    }
    missing = [str(path.relative_to(tree)) for path in wanted.values() if not path.exists()]
    if missing:
        raise check_run.CheckFailed(
            f"--weights real needs {', '.join(missing)} under the tree (download them as LatentSync's README says), "
            "or use --weights synthetic"
        )
    vae = tree / "checkpoints" / "vae"
    return {k: str(v) for k, v in wanted.items()} | {
        "vae": str(vae) if vae.is_dir() else release.release_fact(spec, "vae"),
        "cached": True,
    }
