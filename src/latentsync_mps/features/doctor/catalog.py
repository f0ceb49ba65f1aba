"""What `lsync-port doctor` knows about LatentSync and its packages, as data.

Sources: the upstream READMEs, `setup_env.sh`, `inference.sh` and `scripts/inference.py` of each
release (bytedance/LatentSync bf00e09 / 75a4a17 / d058a61 / a229c39), and, for the wheels, PyPI's
file lists as docs/porting-facts.md records them (with how to check them again). What differs
between releases (weights repository, face detector, resolution, VAE, whisper model) is in
patches/upstreams.toml (`[release.facts]`, release_facts.py); what is kept here is the same for
every release, or about packages and platforms.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from latentsync_mps.pack import release_facts

GIB = 1024**3


@dataclass(frozen=True)
class Checkpoint:
    """One file a release reads at inference time.

    base: "tree" (relative to the tree root: upstream opens these relative to the working
    directory, which is the root when run as `python -m scripts.inference`) or "torch_hub"
    (relative to torch.hub.get_dir()).
    required: False when the upstream code downloads the file by itself on first use.
    """

    path: str
    purpose: str
    get: str = ""  # how to get it, when it is not a file of a Hugging Face repository
    base: str = "tree"
    required: bool = True
    group: str = ""  # files of one group are fetched together (a downloaded folder)
    repo: str = ""  # the Hugging Face repository that has it, as `remote`
    remote: str = ""


def _core(repo: str, whisper: str = "tiny") -> list[Checkpoint]:
    """The two files upstream's README names for inference, downloaded with
    `huggingface-cli download REPO FILE... --local-dir checkpoints` (setup_env.sh)."""
    return [
        Checkpoint("checkpoints/latentsync_unet.pt", "UNet weights", repo=repo, remote="latentsync_unet.pt"),
        Checkpoint(
            f"checkpoints/whisper/{whisper}.pt",
            f"Whisper {whisper} audio encoder",
            repo=repo,
            remote=f"whisper/{whisper}.pt",
        ),
    ]


# face_alignment (1.0, 1.5) fetches these into torch.hub's folder on first use; upstream's
# setup_env.sh links them there from checkpoints/auxiliary instead. Only built when device != "cpu".
_FACE_ALIGNMENT = [
    Checkpoint(
        f"checkpoints/{name}",
        f"face_alignment {what} (used when the device is not cpu)",
        "downloaded by face_alignment on first use (needs network); or link it from checkpoints/auxiliary "
        "as upstream's setup_env.sh does",
        base="torch_hub",
        required=False,
        group="face_alignment",
    )
    for name, what in (("s3fd-619a316812.pth", "face detector"), ("2DFAN4-cd938726ad.zip", "landmark model"))
]

# InsightFace's FaceAnalysis(root="checkpoints/auxiliary") loads models/buffalo_l/ and downloads the
# whole buffalo_l pack when that folder does not exist; with allowed_modules=["detection",
# "landmark_2d_106"] it needs these two. A folder that exists without them is not re-downloaded.
_INSIGHTFACE = [
    Checkpoint(
        f"checkpoints/auxiliary/models/buffalo_l/{name}",
        f"InsightFace {what}",
        "downloaded by InsightFace on first run when checkpoints/auxiliary/models/buffalo_l is absent (needs network)",
        required=False,
        group="buffalo_l",
    )
    for name, what in (("det_10g.onnx", "face detector"), ("2d106det.onnx", "106-point landmarks"))
]


def checkpoints(profile: str, release: str | None, whisper: str = "tiny") -> list[Checkpoint] | None:
    """The checkpoint files a release needs for inference, from its facts in patches/upstreams.toml
    (the Hugging Face repository of its weights, its face detector); None when lsync-port has no
    list for the profile. An unrecognised release of the latentsync profile gets the newest list."""
    if profile != "latentsync":
        return None
    facts = release_facts.lookup(profile, release) or release_facts.newest(profile)
    if facts is None:
        return None
    faces = _INSIGHTFACE if facts.uses_insightface else _FACE_ALIGNMENT
    return _core(facts.weights_repo, whisper) + faces


def vae_repo(profile: str | None = None, release: str | None = None) -> str | None:
    """The VAE the release's scripts/inference.py loads (AutoencoderKL.from_pretrained); without a
    known release, the newest release's."""
    facts = release_facts.lookup(profile, release) or release_facts.newest(profile)
    return facts.vae if facts else None


VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class _ResolutionByRelease(Mapping):
    """Default resolution of each latentsync release (the `data.resolution` of the config its
    inference.sh names), read from the facts in patches/upstreams.toml when asked."""

    def _table(self) -> dict[str, int]:
        return {e.name: e.facts.resolution for e in release_facts._entries(None) if e.profile == "latentsync"}

    def __getitem__(self, release: str) -> int:
        return self._table()[release]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


DEFAULT_RESOLUTION: Mapping[str, int] = _ResolutionByRelease()

# Minimum accelerator memory for inference: each release's `memory_need_gb` in
# patches/upstreams.toml (the upstream READMEs' figures for CUDA with fp16). On a Mac the figure
# is a lower bound: the GPU shares RAM with macOS, and MPS attention materialises the whole score matrix.
MEMORY_BASIS = "upstream README's minimum GPU memory for CUDA fp16 inference; a lower bound on a Mac"


def memory_need_gb(resolution: int, release: str | None = None) -> float:
    """Memory for one inference at `resolution` (pixels per side): the release's own figure at
    its own resolution; otherwise from the figures of the releases that stand for a resolution
    (`reference_for_resolution`: 1.5 at 256, 1.6 at 512), interpolated by pixel count between
    them and scaled beyond."""
    own = release_facts.named(release)
    if own is not None and own.resolution == resolution:
        return own.memory_need_gb
    points = sorted((res, facts.memory_need_gb) for res, (_, facts) in release_facts.reference_releases().items())
    if not points:
        raise release_facts.ReleaseFactsError(
            "upstreams.toml", "*", "reference_for_resolution", "no release stands for a resolution (set it on one)"
        )
    if resolution <= points[0][0]:
        return points[0][1]
    for (low_res, low), (high_res, high) in itertools.pairwise(points):
        if resolution <= high_res:
            share = (resolution**2 - low_res**2) / (high_res**2 - low_res**2)
            return round(low + (high - low) * share, 1)
    high_res, high = points[-1]
    return round(high * (resolution / high_res) ** 2, 1)


# One Metal buffer may hold at most this many bytes (MTLDevice.maxBufferLength on Apple silicon).
METAL_BUFFER_LIMIT = 2**32

# The MPS backend's default high-watermark ratio (PYTORCH_MPS_HIGH_WATERMARK_RATIO): allocations
# may grow to this multiple of torch.mps.recommended_max_memory() before "MPS backend out of memory".
MPS_DEFAULT_HIGH_WATERMARK = 1.7
MPS_MIN_MACOS = (12, 3)  # the MPS backend's own floor
MPS_INT64_MACOS = (13, 3)  # int64 reductions, cumsum and sort on MPS
MPS_BF16_MACOS = (14, 0)  # bfloat16 on MPS


def video_reader_wheel(system: str, machine: str, python: tuple[int, int], macos: tuple[int, ...] | None):
    """The distribution that provides `import decord` with a wheel for this platform.

    Returns (distribution or None, explanation). eva-decord 0.6.1: macOS arm64 wheels for CPython
    3.8-3.11, a manylinux x86_64 wheel for any CPython 3, win_amd64. decord2: CPython 3.10-3.14 on
    macOS 14+ arm64. Plain decord 0.6.0 has no macOS arm64 wheel."""
    py = f"{python[0]}.{python[1]}"
    if system == "Darwin" and machine == "arm64":
        if (3, 8) <= python <= (3, 11):
            return "eva-decord", f"eva-decord 0.6.1 has macOS arm64 wheels for CPython 3.8-3.11 (this is {py})"
        if (3, 12) <= python <= (3, 14):
            if macos is not None and macos < (14, 0):
                return None, (
                    f"CPython {py} on macOS {'.'.join(map(str, macos))}: eva-decord has no wheel for 3.12+ "
                    "and decord2's wheels need macOS 14"
                )
            return "decord2", f"eva-decord has no macOS wheel for CPython {py}; decord2 covers 3.10-3.14 on macOS 14+"
        return None, f"no decord wheel for CPython {py} on macOS arm64 (eva-decord: 3.8-3.11, decord2: 3.10-3.14)"
    if system == "Darwin":
        return None, f"no known decord wheel for macOS {machine} (the ported tree targets Apple Silicon)"
    if system == "Linux" and machine in ("x86_64", "AMD64"):
        return "eva-decord", "eva-decord 0.6.1 has a manylinux x86_64 wheel for any CPython 3"
    if system == "Windows" and machine in ("AMD64", "x86_64"):
        return "eva-decord", "eva-decord 0.6.1 has a win_amd64 wheel"
    return None, f"no known decord wheel for {system} {machine}: it would build from source"


DECORD_DISTRIBUTIONS = ("eva-decord", "decord2", "decord")


def no_wheel(name: str, system: str, machine: str, python: tuple[int, int], macos: tuple[int, ...] | None):
    """Why pip finds no wheel of requirement `name` here, or None when lsync-port knows of no such gap."""
    if system != "Darwin":
        return None
    if name in ("onnxruntime-gpu", "xformers", "triton"):
        return f"{name} has no macOS wheels"
    if name == "decord" and machine == "arm64":
        return "decord has no macOS arm64 wheel (eva-decord or decord2 install the same `import decord`)"
    if name == "eva-decord" and machine == "arm64" and python >= (3, 12):
        return f"eva-decord has no macOS arm64 wheel for CPython {python[0]}.{python[1]} (decord2 has)"
    if name == "decord2" and machine == "arm64" and (macos is not None and macos < (14, 0) or python < (3, 10)):
        return "decord2's macOS wheels need macOS 14 and CPython 3.10+"
    return None


# Requirement names that another distribution satisfies (same import name).
EQUIVALENT = {
    "decord": DECORD_DISTRIBUTIONS,
    "eva-decord": DECORD_DISTRIBUTIONS,
    "decord2": DECORD_DISTRIBUTIONS,
    "onnxruntime-gpu": ("onnxruntime-gpu",),
    "opencv-python": ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
}
