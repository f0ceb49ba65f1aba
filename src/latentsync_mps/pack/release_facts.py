"""What a release of LatentSync is like at run time, as data: the `[release.facts]` table of each
release in patches/upstreams.toml.

    face_detection    "insightface" (1.6 and later: FaceAnalysis on onnxruntime, buffalo_l models
                      under checkpoints/auxiliary) or "face_alignment" (1.0, 1.5)
    whole_chunks      the pipeline runs whole chunks of num_frames and drops the rest (1.0, 1.5);
                      false: it follows the audio, one frame per audio chunk (1.6 and later)
    weights_repo      the Hugging Face repository of checkpoints/latentsync_unet.pt and whisper/
    resolution        data.resolution of the config its inference.sh names
    vae               the VAE scripts/inference.py loads (AutoencoderKL.from_pretrained)
    whisper           the whisper model (checkpoints/whisper/<name>.pt) of its released configs
                      (the wrapper, which has no facts of its own, links its checkpoint by this name)
    memory_need_gb    upstream's published minimum GPU memory for one CUDA fp16 inference at
                      `resolution` (1.0: about 6.5 GB; 1.6's README: 8 GB with 1.5, 18 GB with 1.6)
    reference_for_resolution
                      true: a bare resolution (doctor without a tree) is taken to mean this
                      release, for its memory figure and its shipped forecast (1.5 at 256, 1.6 at
                      512); optional, default false
    whisper_by_width  a UNet config of this cross_attention_dim loads that model instead

Read by doctor (catalog, tree, checks), forecast, and verify's runner, which hands them to the
harness in the spec file it writes (`spec["release_facts"]`, `to_json()`): the harness runs under
the tree's own interpreter and imports nothing from lsync-port.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from latentsync_mps.pack.errors import ReleaseFactsError, RuleFileError, TomlSyntaxError
from latentsync_mps.pack.toml_files import parse_toml

FACE_DETECTORS = ("face_alignment", "insightface")


@dataclass(frozen=True)
class ReleaseFacts:
    face_detection: str
    whole_chunks: bool
    weights_repo: str
    resolution: int
    vae: str
    whisper: str
    memory_need_gb: float
    reference_for_resolution: bool = False
    whisper_by_width: tuple[tuple[int, str], ...] = ()

    def whisper_for(self, cross_attention_dim: int | None) -> str:
        """The whisper model a UNet config with this cross_attention_dim loads."""
        return dict(self.whisper_by_width).get(cross_attention_dim, self.whisper)  # type: ignore[arg-type]

    @property
    def uses_insightface(self) -> bool:
        return self.face_detection == "insightface"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["whisper_by_width"] = {str(width): name for width, name in self.whisper_by_width}
        return data


# key -> (type, what a value must be), in the order the docstring lists them
_KEYS: dict[str, tuple[type, str]] = {
    "face_detection": (str, f"one of {', '.join(FACE_DETECTORS)}"),
    "whole_chunks": (bool, "true or false"),
    "weights_repo": (str, "a Hugging Face repository such as 'ByteDance/LatentSync-1.6'"),
    "resolution": (int, "a positive number of pixels"),
    "vae": (str, "a Hugging Face repository such as 'stabilityai/sd-vae-ft-mse'"),
    "whisper": (str, "a whisper model name such as 'tiny'"),
    "memory_need_gb": ((int, float), "a positive number of GB"),
    "reference_for_resolution": (bool, "true or false"),
    "whisper_by_width": (dict, "a table of cross_attention_dim = model name"),
}
_OPTIONAL = ("reference_for_resolution", "whisper_by_width")


def parse(table: Any, path: Path | str, release: str) -> ReleaseFacts:
    """Validate one release's facts table; a mistake is a ReleaseFactsError naming file and key."""

    def fail(key: str, message: str) -> ReleaseFactsError:
        return ReleaseFactsError(path, release, key, message)

    if not isinstance(table, dict):
        raise fail("", f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(_KEYS)})")
    values: dict[str, Any] = {}
    for key, (kind, what) in _KEYS.items():
        if key not in table:
            if key in _OPTIONAL:
                continue
            raise fail(key, f"missing ({what})")
        item = table[key]
        # bool is an int in Python: `resolution = true` must not pass as 1
        numeric = kind is int or (isinstance(kind, tuple) and int in kind)
        if not isinstance(item, kind) or (numeric and isinstance(item, bool)):
            raise fail(key, f"expected {what}, got {item!r}")
        values[key] = item
    if values["face_detection"] not in FACE_DETECTORS:
        raise fail("face_detection", f"expected one of {', '.join(FACE_DETECTORS)}, got {values['face_detection']!r}")
    if values["resolution"] <= 0:
        raise fail("resolution", f"expected a positive number of pixels, got {values['resolution']!r}")
    if values["memory_need_gb"] <= 0:
        raise fail("memory_need_gb", f"expected a positive number of GB, got {values['memory_need_gb']!r}")
    values["memory_need_gb"] = float(values["memory_need_gb"])
    by_width = []
    for width, name in (values.pop("whisper_by_width", None) or {}).items():
        if not str(width).isdigit() or not isinstance(name, str):
            raise fail(f"whisper_by_width.{width}", f"expected cross_attention_dim = model name, got {name!r}")
        by_width.append((int(width), name))
    return ReleaseFacts(**values, whisper_by_width=tuple(sorted(by_width)))


def lookup(profile: str | None, release: str | None, root: Path | None = None) -> ReleaseFacts | None:
    """The facts of a release known by name (doctor's tree facts carry the names; the tests
    hand-make them): read from upstreams.toml of the rule packs in use (patches_dir()), unless
    `root` says which. None for a release without facts, or one not listed."""
    for entry in _entries(root):
        if (entry.profile, entry.name) == (profile, release):
            return entry.facts
    return None


def newest(profile: str | None = None, root: Path | None = None) -> ReleaseFacts | None:
    """The facts of the newest release of `profile` that has them; of any profile when it has
    none (the wrapper vendors LatentSync). What a tree of no known release is taken to be."""
    entries = sorted(_entries(root), key=lambda e: e.version)
    mine = [e for e in entries if e.profile == profile]
    chosen = mine or entries
    return chosen[-1].facts if chosen else None


def named(release: str | None, root: Path | None = None) -> ReleaseFacts | None:
    """The facts of the release of this name, whatever its profile (None: no such release with facts)."""
    return next((e.facts for e in _entries(root) if e.name == release), None)


def reference_releases(root: Path | None = None) -> dict[int, tuple[str, ReleaseFacts]]:
    """resolution -> (release name, facts) of the releases marked `reference_for_resolution`:
    what a bare resolution is taken to mean (the newest marked one, if several share one)."""
    marked = sorted((e for e in _entries(root) if e.facts.reference_for_resolution), key=lambda e: e.version)
    return {e.facts.resolution: (e.name, e.facts) for e in marked}


@dataclass(frozen=True)
class _Entry:
    profile: str
    name: str
    version: Version
    facts: ReleaseFacts


def _entries(root: Path | None) -> tuple[_Entry, ...]:
    from latentsync_mps.pack.paths import patches_dir

    path = (root or patches_dir()) / "upstreams.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ()
    return _read_entries(str(path), text)


@functools.lru_cache(maxsize=8)
def _read_entries(path: str, text: str) -> tuple[_Entry, ...]:
    """The releases with facts in one upstreams.toml (parsed once per content). The rest of each
    entry is ruleset.load's to check."""
    try:
        data = parse_toml(text)
    except TomlSyntaxError as error:
        raise RuleFileError(Path(path), f"not valid TOML: {error}") from None
    found = []
    for entry in data.get("release", []):
        if isinstance(entry, dict) and "facts" in entry:
            name = str(entry.get("name"))
            try:
                version = Version(str(entry.get("version")))
            except InvalidVersion:
                raise RuleFileError(Path(path), f"release '{name}': invalid version {entry.get('version')!r}") from None
            found.append(_Entry(str(entry.get("profile")), name, version, parse(entry["facts"], path, name)))
    return tuple(found)


def spec_facts(pack, profile, release) -> dict[str, Any] | None:
    """What verify's runner writes into the harness's spec: the detected release's facts
    ("detected": true), else the newest facts of the profile or the profiles it includes, or of
    any profile ("detected": false: the harness then judges what the tree's files can tell from
    the files); None when the pack has no facts at all."""
    if release is not None and release.facts is not None:
        return release.facts.to_json() | {"release": release.name, "detected": True}
    names = [profile.name, *profile.include]
    ranked = [
        r
        for r in sorted((r for p in pack.profiles.values() for r in p.releases), key=lambda r: r.version)
        if r.facts is not None
    ]
    mine = [r for r in ranked if r.profile in names] or ranked
    if not mine:
        return None
    return mine[-1].facts.to_json() | {"release": mine[-1].name, "detected": False}
