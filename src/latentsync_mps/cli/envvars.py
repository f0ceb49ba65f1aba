"""Every environment variable lsync-port, its runtime helper or its test set-up reads, with its meaning.

The one declared table: scripts/gen_reference.py writes docs/reference/environment.md from it, and
tests/test_envvars.py fails when code under src/ reads a variable that is not here (or when one
here is read nowhere), so the table cannot go stale. The runtime helper, which is written into
ported trees and imports nothing of lsync-port, keeps its own constants; this table only
describes them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Who reads a variable. The order is the order of the sections on the generated page.
HELPER = "the ported tree (runtime helper `_lsync_port.py`)"
TOOL = "lsync-port"
DOCTOR = "lsync-port doctor (reported, or used to find caches)"
VERIFY = "lsync-port verify"
TESTS = "the test suite and scripts"
READERS = (HELPER, TOOL, DOCTOR, VERIFY, TESTS)


@dataclass(frozen=True)
class EnvVar:
    name: str
    reader: str  # one of READERS
    values: str  # what it may be set to, and the default
    meaning: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        "LATENTSYNC_DEVICE",
        HELPER,
        "`auto` (default), `mps`, `cuda`, `cuda:N`, `cpu`",
        "Overrides the automatic choice (mps, else cuda, else cpu). An unknown value stops the run with "
        "one line naming the valid ones (a `ValueError`). Read when the code runs, so a value set late "
        "(ComfyUI, a notebook) counts. doctor reports it; verify and forecast set it in their child.",
    ),
    EnvVar(
        "LATENTSYNC_DTYPE",
        HELPER,
        "`float16`, `bfloat16`, `float32`; unset: the dtype policy",
        "Overrides the compute dtype everywhere (the policy: float32 on mps where the recommended "
        "working set is at least 36 GiB, else float16; float16 on CUDA with compute capability > 7; "
        "float32 on the CPU). An unknown value stops the run with one line.",
    ),
    EnvVar(
        "LATENTSYNC_MPS_CHUNKING",
        HELPER,
        "`1` (default), `0` (or `false`, `no`, `off`), `force`",
        "Attention and VAE in chunks on mps, so that no buffer passes Metal's 2**32-byte limit. `0` "
        "turns chunking off; `force` chunks on every device (for tests).",
    ),
    EnvVar(
        "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES",
        HELPER,
        "bytes, default 1073741824 (1 GiB)",
        "The byte budget of one attention or VAE chunk on mps. doctor suggests a smaller one when a Mac "
        "is short of memory and warns when it is not a positive number.",
    ),
    EnvVar(
        "PYTORCH_ENABLE_MPS_FALLBACK",
        HELPER,
        "`1` to enable (PyTorch's own variable)",
        "Runs ops without an MPS kernel on the CPU. Must be set before torch is loaded. The helper names "
        "it in its one-line announcement; doctor warns on a Mac when it is not 1; under `verify --device "
        "mps-sim` an op it would rescue is a warning instead of an error.",
    ),
    EnvVar(
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
        HELPER,
        "a number >= 0; PyTorch's default 1.7, `0.0` removes the cap (PyTorch's own variable)",
        "The MPS allocator's memory cap. When it is set, `_lsync_port.set_memory_fraction()` leaves the "
        "cap alone (the wrapper's `set_per_process_memory_fraction(0.8)` would otherwise lower it). "
        "doctor reports it, checks that it is a number, and suggests `0.0` when a Mac is short.",
    ),
    EnvVar(
        "LSYNC_PORT_PATCHES",
        TOOL,
        "a folder laid out as `patches/`",
        "Use these rule packs instead of the packaged ones (for people writing rules).",
    ),
    EnvVar(
        "LSYNC_PORT_LOCK_WAIT",
        TOOL,
        "seconds, default 5",
        "How long a second `apply` or `revert` waits for the tree's lock (`.lsync-port/lock`) before "
        "exiting 12 with the holder's pid, host and command.",
    ),
    EnvVar(
        "LSYNC_PORT_DEBUG",
        TOOL,
        "any non-empty value",
        "On an internal error (a bug in lsync-port), print the traceback instead of the one-line message.",
    ),
    EnvVar(
        "PYTORCH_MPS_LOW_WATERMARK_RATIO",
        DOCTOR,
        "PyTorch's own variable",
        "Reported by doctor with the tree's interpreter's other facts.",
    ),
    EnvVar("CUDA_VISIBLE_DEVICES", DOCTOR, "CUDA's own variable", "Reported: it can hide a GPU from torch."),
    EnvVar(
        "HF_HOME", DOCTOR, "Hugging Face's own variable", "Where doctor looks for the Hugging Face cache (the VAE)."
    ),
    EnvVar("HF_HUB_CACHE", DOCTOR, "Hugging Face's own variable", "The Hugging Face hub cache itself, before HF_HOME."),
    EnvVar("HUGGINGFACE_HUB_CACHE", DOCTOR, "Hugging Face's older name", "As HF_HUB_CACHE."),
    EnvVar(
        "HF_HUB_OFFLINE",
        DOCTOR,
        "Hugging Face's own variable",
        "Reported (a first run offline cannot download the VAE or face models); verify sets it for the "
        "ComfyUI node it runs.",
    ),
    EnvVar(
        "TORCH_HOME", DOCTOR, "PyTorch's own variable", "Where doctor looks for torch hub downloads (face_alignment)."
    ),
    EnvVar(
        "XDG_CACHE_HOME",
        DOCTOR,
        "default `~/.cache`",
        "The cache root doctor searches, and where verify keeps its synthetic weights "
        "(`lsync-port/synthetic/` under it) and a cpu verify's output as the parity reference of a later "
        "verify off cpu (`lsync-port/verify-reference/`).",
    ),
    EnvVar(
        "PATH",
        VERIFY,
        "the usual search path",
        "LatentSync runs `ffmpeg` by name: with none on PATH, verify's child puts a folder with "
        "imageio-ffmpeg's binary first. doctor's `ffmpeg` check looks for `ffmpeg` on it.",
    ),
    EnvVar("VIRTUAL_ENV", DOCTOR, "set by venv", "Reported: which environment the tree's interpreter belongs to."),
    EnvVar("CONDA_PREFIX", DOCTOR, "set by conda", "Reported: which environment the tree's interpreter belongs to."),
    EnvVar(
        "LSYNC_UPSTREAM",
        TESTS,
        "checkouts, separated by `:`",
        "Opt-in tests port and verify real LatentSync checkouts (copied first, never modified).",
    ),
    EnvVar(
        "LSYNC_COMFY",
        TESTS,
        "checkouts, separated by `:`",
        "Opt-in tests on real ComfyUI-LatentSyncWrapper checkouts.",
    ),
    EnvVar(
        "LSYNC_UPSTREAM_PYTHON",
        TESTS,
        "an interpreter, or `RELEASE=PATH` entries and one default, separated by `:`",
        "The interpreter with the upstream dependency stack for the opt-in verify tests, e.g. "
        "`1.0=/venv-1.0/bin/python:/venv/bin/python`.",
    ),
    EnvVar(
        "LSYNC_PORT_MAC_RESOLVE",
        VERIFY,
        "`on` (default), `off`",
        "verify's pre-check and doctor resolve the tree's requirements for the modelled Mac with uv (the registry, "
        "a few seconds); `off` skips it and says so. The test suite sets it off, except in its opt-in registry tests.",
    ),
    EnvVar(
        "LSYNC_PORT_REGISTRY",
        TESTS,
        "`1` to run them (unset: skipped)",
        "Opt-in tests that ask the real package registry (PyPI) through uv: the ported wrapper's requirements "
        "resolve for ComfyUI Desktop's Mac (tests/test_mac_resolve.py). Every other test runs on recorded outputs.",
    ),
    EnvVar(
        "LSYNC_PORT_REQUIRE_EXTRAS",
        TESTS,
        "`1` (set by scripts/test.sh)",
        "A test skipped for a missing extra, another torch version or root privileges fails the run.",
    ),
    EnvVar(
        "LSYNC_PORT_TORCH_INDEX",
        TESTS,
        "a package index URL",
        "scripts/test.sh installs the pinned torch from this index (CI sets PyTorch's CPU index).",
    ),
    EnvVar(
        "LSYNC_PORT_TEST_WORKERS",
        TESTS,
        "a number or `auto` (default)",
        "How many pytest-xdist workers scripts/test.sh runs the suite on; `0` runs it in one process.",
    ),
    EnvVar("LSYNC_PORT_VENV", TESTS, "a folder, default `.venv`", "The virtual environment scripts/test.sh creates."),
    EnvVar(
        "LSYNC_PORT_COMFY_PYTHON",
        TESTS,
        "an interpreter",
        "The interpreter with the ComfyUI stacks' media packages (torchaudio, torchcodec, av, soundfile) that "
        "tests/test_comfy_stacks.py runs the wrapper fixture with; scripts/test.sh makes one when unset.",
    ),
    EnvVar(
        "LSYNC_PORT_COMFY_VENV",
        TESTS,
        "a folder, default `.venv-comfy`",
        "Where scripts/test.sh makes that interpreter (torch 2.14.1 and scripts/install_comfy_stack.sh).",
    ),
    EnvVar(
        "LSYNC_PORT_TEST_CACHE",
        TESTS,
        "a folder (default: a new temporary one per run, deleted at its end)",
        "The suite's cache folder (XDG_CACHE_HOME for every test and child): synthetic weights, parity "
        "references. Naming one keeps it between runs.",
    ),
    EnvVar(
        "LSYNC_PORT_TEST_USER_CACHE",
        TESTS,
        "a folder (set by tests/conftest.py)",
        "The user's cache folder as it was before the suite redirected XDG_CACHE_HOME; "
        "tests/test_test_cache.py checks that nothing lands there.",
    ),
    EnvVar(
        "LSYNC_CORPUS_FILES",
        TESTS,
        "a number, default 40",
        "Set at all: the corpus test rewrites site-packages, at least this many files (default 40 of "
        "torch 2.13.0's own files otherwise).",
    ),
    EnvVar(
        "LSYNC_CORPUS_MAX_BYTES",
        TESTS,
        "bytes, default 60000",
        "The corpus test skips files larger than this.",
    ),
    EnvVar(
        "GITHUB_STEP_SUMMARY",
        TESTS,
        "set by GitHub Actions",
        "scripts/repatch_upstream.py appends its markdown table there.",
    ),
)


def by_name() -> dict[str, EnvVar]:
    return {var.name: var for var in ENV_VARS}
