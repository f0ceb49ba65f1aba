"""Memory forecast inside a LatentSync tree: a shape-only run at the release's real size.

    python child.py SPEC.json

Runs in a child process under the tree's interpreter, like verify's harness, whose event
machinery it reuses (verify/check_run.py and verify/release.py, loaded by path). Each
configuration is one check; its `data` carries the figures:

    {"event": "end", "check": "mps-float16-chunked", "status": "pass", "data": {"peak_bytes": ...}}

Nothing is computed: the tree's own UNet class (with its real config) and the real VAE are built
on the `meta` device, and the pipeline's own methods run one 16-frame chunk of inference on meta
tensors: VAE encode of the masked and reference images, the denoising loop with
classifier-free guidance (batch doubled), VAE decode. meter.py counts the bytes every aten op
allocates. The device is modelled where it differs:

- attention: `F.scaled_dot_product_attention` becomes the kernel the device runs. CUDA: flash
  attention (memory-efficient attention where flash cannot: a mask, head dim over 256); neither
  keeps the score matrix. mps: `_scaled_dot_product_attention_math_for_mps`, the MPS kernel, whose
  outputs include the whole score matrix in the input dtype.
- chunking: the ported tree's helper chunks on mps only; here the device is meta, so
  LATENTSYNC_MPS_CHUNKING=force turns it on and 0 off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class ForecastState:
    """What the build check gives the configurations' checks: one run's state, typed."""

    config: dict = dataclasses.field(default_factory=dict)  # the tree's UNet config, resolved
    resolution: int = 0  # the frame side in pixels: the spec's, else the config's
    torch: Any = None  # the torch module
    meter_module: Any = None  # meter.py: bytes of every aten op, by phase
    work_module: Any = None  # work.py: FLOPs and bytes by arithmetic intensity
    unet_module: Any = None  # the tree's latentsync.models.unet
    pipeline_module: Any = None  # the tree's latentsync.pipelines.lipsync_pipeline
    whisper_module: Any = None  # the tree's latentsync.whisper.whisper.model
    ported: bool = False  # the tree has lsync-port's runtime helper
    scheduler: Any = None  # the tree's DDIM scheduler
    whisper: dict = dataclasses.field(default_factory=dict)  # the release's whisper facts (dims, checkpoint)
    audio_chunk_shape: tuple = ()  # (rows, width) of one frame's audio features
    models: dict = dataclasses.field(default_factory=dict)  # (device, dtype) -> (unet, vae, whisper) on meta


def _load_protocol():
    """payload/protocol.py, loaded by path: the one sibling that cannot come through its own loader."""
    if "lsync_port_protocol" not in sys.modules:
        module_spec = importlib.util.spec_from_file_location("lsync_port_protocol", HERE.parent / "protocol.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["lsync_port_protocol"] = module
        module_spec.loader.exec_module(module)
    return sys.modules["lsync_port_protocol"]


protocol = _load_protocol()
check_run = protocol.load_sibling(HERE.parent / "verify" / "check_run.py")
release = protocol.load_sibling(HERE.parent / "verify" / "release.py")


def attention_kernels(torch, device: str):
    """A torch-function mode that runs F.scaled_dot_product_attention as `device` would."""
    from torch.overrides import TorchFunctionMode

    functional = torch.nn.functional
    aten = torch.ops.aten

    def as_4d(tensor):
        return tensor if tensor.dim() == 4 else tensor.reshape((-1,) * (4 - tensor.dim()) + tuple(tensor.shape))

    def cuda(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        shape = query.shape[:-1] + value.shape[-1:]
        q, k, v = as_4d(query), as_4d(key), as_4d(value)
        if attn_mask is None and q.shape[-1] <= 256:
            out = aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
        else:
            bias = None if attn_mask is None else attn_mask.expand(q.shape[:-1] + k.shape[-2:-1])
            out = aten._scaled_dot_product_efficient_attention(q, k, v, bias, False, dropout_p, is_causal, scale=scale)[
                0
            ]
        return out.reshape(shape)

    def mps(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        shape = query.shape[:-1] + value.shape[-1:]
        q, k, v = as_4d(query), as_4d(key), as_4d(value)
        out = aten._scaled_dot_product_attention_math_for_mps(q, k, v, attn_mask, dropout_p, is_causal, scale=scale)
        return out[0].reshape(shape)

    kernel = cuda if device == "cuda" else mps

    class AttentionKernels(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is functional.scaled_dot_product_attention:
                return kernel(*args, **(kwargs or {}))
            return func(*args, **(kwargs or {}))

    return AttentionKernels()


class MissingModule(types.ModuleType):
    """Stands in for a package the forecast does not run (face detection): any use of it fails."""

    __path__: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return MissingModule(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{self.__name__} is not installed (the forecast stood in for it)")


def import_tree_module(name: str, stand_ins: list[str], used: set[str]):
    """Import a module of the tree; a missing package of `stand_ins` (imported by the pipeline
    module for face detection, which the forecast does not run) is replaced by a MissingModule."""
    while True:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if missing.split(".")[0] not in stand_ins or missing in sys.modules:
                raise
            sys.modules[missing] = MissingModule(missing)
            used.add(missing)


def check_build(spec, state):
    """Import the tree's model code and build the real-size models on meta, once per dtype later."""
    import torch

    state.torch = torch
    state.meter_module = protocol.load_sibling(HERE / "meter.py")
    state.work_module = protocol.load_sibling(HERE / "work.py")
    stood_in: set[str] = set()
    stand_ins = spec.stand_ins
    state.unet_module = import_tree_module("latentsync.models.unet", stand_ins, stood_in)
    state.pipeline_module = import_tree_module("latentsync.pipelines.lipsync_pipeline", stand_ins, stood_in)
    state.whisper_module = import_tree_module("latentsync.whisper.whisper.model", stand_ins, stood_in)
    try:
        importlib.import_module(spec.runtime_module)
        state.ported = True
    except ModuleNotFoundError:
        state.ported = False
    from diffusers import DDIMScheduler

    state.scheduler = DDIMScheduler.from_pretrained(str(Path(spec.tree) / "configs"))
    model = state.config["model"]
    whisper = state.whisper = whisper_model(spec, state.config)
    state.audio_chunk_shape = audio_chunk_shape(whisper, state.config)
    return (
        f"torch {torch.__version__}; UNet from {spec.config} (block_out_channels "
        f"{list(model.get('block_out_channels', []))}), VAE {spec.vae['name']}, whisper {whisper['name']}; "
        f"{'ported' if state.ported else 'not ported'}"
        + (f"; not installed, stood in for: {', '.join(sorted(stood_in))}" if stood_in else ""),
        {
            "torch": torch.__version__,
            "ported": state.ported,
            "resolution": state.resolution,
            "stood_in": sorted(stood_in),
            # What the UNet's cross-attention reads per chunk: guidance doubles it.
            "audio_features_shape": [
                2 if spec.guidance_scale > 1 else 1,
                spec.frames,
                *state.audio_chunk_shape,
            ],
        },
    )


def whisper_model(spec, config) -> dict:
    """The whisper checkpoint the inference script loads: the one whose width is the UNet's
    cross_attention_dim (small for 768, tiny for 384)."""
    width = config["model"].get("cross_attention_dim", 384)
    for name, entry in spec.whisper.items():
        if entry["cross_attention_dim"] == width:
            return {"name": name, "dims": entry["dims"]}
    raise check_run.CheckFailed(f"no whisper model of width {width} in patches/forecast.toml")


def audio_chunk_shape(whisper: dict, config) -> tuple[int, int]:
    """One frame's audio features (Audio2Feature.get_sliced_feature): 2 * (left + right + 1)
    feature indices, each holding the encoder's n_audio_layer + 1 layer outputs, of
    n_audio_state values."""
    left, right = list(config["data"].get("audio_feat_length", [2, 2]))
    dims = whisper["dims"]
    return 2 * (left + right + 1) * (dims["n_audio_layer"] + 1), dims["n_audio_state"]


def build_models(spec, state, dtype):
    """The UNet, VAE and whisper model at real size on meta: parameters without data."""
    key = str(dtype)
    if key in state.models:
        return state.models[key]
    torch = state.torch
    from diffusers import AutoencoderKL

    vae_spec = spec.vae
    with torch.device("meta"):
        unet, _ = state.unet_module.UNet3DConditionModel.from_pretrained(state.config["model"], "", device="meta")
        vae = AutoencoderKL(**vae_spec["config"])
        whisper_module = state.whisper_module
        fields = set(inspect.signature(whisper_module.ModelDimensions).parameters)
        dims = whisper_module.ModelDimensions(**{k: v for k, v in state.whisper["dims"].items() if k in fields})
        whisper = whisper_module.Whisper(dims)
    unet = unet.to(dtype=dtype).eval()
    vae = vae.to(dtype=dtype).eval()
    for name, value in vae_spec.get("scaling", {}).items():
        setattr(vae.config, name, value)  # as the tree's inference script sets them
    # The whisper checkpoint is loaded into a float32 model on the device, on every release.
    state.models[key] = (unet, vae, whisper.eval())
    return state.models[key]


class Phases:
    """Both meters' phases at once: memory (meter.py) and work (work.py). The work meter also tells
    the face paste apart from the VAE decode around it."""

    def __init__(self, memory, work):
        self.memory, self.work = memory, work

    @contextlib.contextmanager
    def during(self, phase: str):
        with self.memory.during(phase), self.work.during(phase):
            yield

    def work_only(self, phase: str):
        return self.work.during(phase)


def run_chunk(spec, state, pipeline, unet, dtype, meter):
    """One chunk of `frames` frames through the pipeline's own methods, as its __call__ does.
    `meter`: a Phases (or anything with `during(phase)` and `work_only(phase)`)."""
    torch = state.torch
    device = torch.device("meta")
    frames, size = spec.frames, state.resolution
    latent = size // pipeline.vae_scale_factor
    guidance = spec.guidance_scale
    cfg = guidance > 1.0
    with meter.during("inputs"):
        rows, width = state.audio_chunk_shape
        audio = torch.zeros(frames, rows, width, device=device, dtype=dtype)
        if cfg:
            audio = torch.cat([torch.zeros_like(audio), audio])
        channels = pipeline.vae.config.latent_channels
        latents = torch.randn(1, channels, frames, latent, latent, device=device, dtype=dtype)
        masks = torch.ones(frames, 1, size, size, device=device, dtype=dtype)
        masked = torch.randn(frames, 3, size, size, device=device, dtype=dtype)
        reference = torch.randn(frames, 3, size, size, device=device, dtype=dtype)
    with meter.during("vae encode"):
        mask_latents, masked_latents = pipeline.prepare_mask_latents(
            masks, masked, size, size, dtype, device, None, cfg
        )
        reference_latents = pipeline.prepare_image_latents(reference, device, dtype, None, cfg)
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(spec.inference_steps, device="cpu")
    for index, timestep in enumerate(scheduler.timesteps[: spec.steps]):
        with meter.during(f"denoise step {index + 1}"):
            unet_input = torch.cat([latents] * 2) if cfg else latents
            unet_input = scheduler.scale_model_input(unet_input, timestep)
            unet_input = torch.cat([unet_input, mask_latents, masked_latents, reference_latents], dim=1)
            noise = unet(unet_input, timestep, encoder_hidden_states=audio).sample
            if cfg:
                uncond, audio_noise = noise.chunk(2)
                noise = uncond + guidance * (audio_noise - uncond)
            latents = scheduler.step(noise, timestep, latents).prev_sample
            # No `del`: as in the pipeline's loop, this step's tensors stay alive into the next
            # step until their names are rebound, so step 2 on carries step 1's leftovers.
    with meter.during("vae decode"):
        decoded = pipeline.decode_latents(latents)
        paste = getattr(pipeline, "paste_surrounding_pixels_back", None) or pipeline.recover_original_pixel_values
        with meter.work_only("face paste"):
            paste(decoded, reference, masks, device, dtype)


def lipsync_pipeline(state: ForecastState, vae, unet):
    """The tree's LipsyncPipeline around the meta models, its audio parts left out. Given by name: 1.0's
    takes (vae, audio_processor, audio_encoder, unet, scheduler), later ones (vae, audio_encoder,
    denoising_unet, scheduler)."""
    pipeline_class = state.pipeline_module.LipsyncPipeline
    given = {"vae": vae, "unet": unet, "denoising_unet": unet, "scheduler": state.scheduler}
    names = list(inspect.signature(pipeline_class.__init__).parameters)[1:]
    return pipeline_class(**{name: given.get(name) for name in names if name in given or "audio" in name})


def check_configuration(configuration, spec, state):
    torch = state.torch
    if configuration["chunking"] is not None and not state.ported:
        raise check_run.SkipCheck("the port's chunking rows need a ported tree (lsync-port apply)")
    os.environ["LATENTSYNC_MPS_CHUNKING"] = "force" if configuration["chunking"] else "0"
    os.environ["LATENTSYNC_DTYPE"] = configuration["dtype"]
    dtype = getattr(torch, configuration["dtype"])
    unet, vae, whisper = build_models(spec, state, dtype)
    pipeline = lipsync_pipeline(state, vae, unet)
    meters = state.meter_module
    meter = meters.MemoryMeter()
    work = state.work_module.WorkMeter()
    weights = meters.module_bytes(unet, vae, whisper)
    with torch.no_grad(), attention_kernels(torch, configuration["device"]), meter, work:
        run_chunk(spec, state, pipeline, unet, dtype, Phases(meter, work))
    phases = {
        name: {k: v + (weights if k == "peak_bytes" else 0) for k, v in record.items()}
        for name, record in meter.phases.items()
    }
    steps = [phases[name]["peak_bytes"] for name in phases if name.startswith("denoise step")]
    data = {
        "peak_bytes": weights + meter.peak,
        "largest_buffer_bytes": meter.largest,
        "largest_buffer_op": meter.largest_op,
        "largest_buffer_shape": list(meter.largest_shape),
        "peak_op": meter.peak_op,
        "weights_bytes": weights,
        "activation_peak_bytes": meter.peak,
        "phases": phases,
        # From step 2 on, every step starts with the same leftovers of the step before and runs the
        # same ops on the same shapes, so its peak repeats: the last two steps agree.
        "steady_steps": len(steps) < 3 or steps[-1] == steps[-2],
        # FLOPs and bytes moved per phase (work.py), with the intensity bins of a roofline.
        "work": {name: record for name, record in work.phases.items() if name != "inputs"},
    }
    gib = 2**30
    return (
        f"peak {data['peak_bytes'] / gib:.2f} GiB (weights {weights / gib:.2f}), "
        f"largest buffer {meter.largest / gib:.2f} GiB ({meter.largest_op})",
        data,
    )


def main(spec_path: str) -> int:
    spec = protocol.Spec.read(spec_path)
    check_run.EVENTS = Path(spec.events)
    tree = spec.tree
    os.chdir(tree)
    sys.path.insert(0, tree)
    # The ported helper's own choices land on the meta device and the dtype of each configuration.
    os.environ["LATENTSYNC_DEVICE"] = "meta"
    spec.device = "meta"
    state = ForecastState()
    try:
        state.config, state.resolution, _ = release.read_config(spec)
    except Exception as error:  # noqa: BLE001 - reported as the config check, in one line
        detail = f"cannot read {spec.config}: {type(error).__name__}: {error}"
        check_run.emit(protocol.CheckEnd("config", "fail", 0, detail))
        return 1
    if not check_run.run_check("build", check_build, spec, state):
        return 1
    ok = True
    for configuration in spec.configurations:
        check = functools.partial(check_configuration, configuration)
        ok = check_run.run_check(configuration["name"], check, spec, state) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
