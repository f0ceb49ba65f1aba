"""Host stacks: what a ported tree runs in on a Mac (patches/stacks.toml, written by scripts/derive_stacks.py).

A stack is a target beside the target torch: the Python, torch, torchvision, torchaudio, torchcodec
and av of a real Mac set-up, whether an `ffmpeg` binary is on PATH there, and what its wheels lack
(derived from them). `verify` and `doctor` model one (`--stack NAME`; by default the one whose
`default_for` lists the tree's profile: ComfyUI Desktop for the wrapper, the tree's own pins for
plain LatentSync). In verify the tree's code then sees only what the stack has (`child_model`,
applied in the child by verify/stack_model.py), and mps-sim judges against the stack's torch.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from latentsync_mps.pack.paths import bundled_patches_dir, patches_dir
from latentsync_mps.port.errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STACKS_FILE = "stacks.toml"


class StackError(BadInput):
    pass


@dataclass(frozen=True)
class Stack:
    name: str
    summary: str
    source: str
    checked: str
    profiles: tuple[str, ...]
    default_for: tuple[str, ...]
    python: str
    macos: str
    ffmpeg_on_path: bool
    ffmpeg_libraries: bool
    packages: dict[str, str] = field(default_factory=dict)
    derived: dict = field(default_factory=dict)
    torch_from_tree: bool = False  # tree-pins: the torch the tree's requirements pin (verify/target_torch.py)
    sources: dict[str, str] = field(default_factory=dict)  # fact -> where it comes from

    @property
    def torch(self) -> str | None:
        return self.packages.get("torch")

    def has(self, distribution: str) -> bool:
        return distribution in self.packages

    def to_json(self, default: bool = False) -> dict:
        """What a report says of the stack it modelled."""
        return {
            "name": self.name,
            "summary": self.summary,
            "source": self.source,
            "checked": self.checked,
            "default": default,
            "python": self.python,
            "macos": self.macos,
            "packages": dict(self.packages),
            "ffmpeg_on_path": self.ffmpeg_on_path,
            "ffmpeg_libraries": self.ffmpeg_libraries,
        }

    def child_model(self) -> dict:
        """What the verify child hides from the tree's code (verify/stack_model.py reads this)."""
        derived = self.derived
        model: dict = {"name": self.name, "python": self.python, "ffmpeg_on_path": self.ffmpeg_on_path, "raise": {}}
        if "torchvision_io" in derived:
            model["keep"] = {"torchvision.io": list(derived["torchvision_io"])}
        if "av_public" in derived:
            model.setdefault("keep", {})["av"] = list(derived["av_public"])
        if not self.packages:
            return model  # tree-pins: the tree's own requirements; nothing is known to be missing
        if not self.has("torchcodec"):
            model["block_modules"] = ["torchcodec"]
        if derived.get("torchaudio_needs_torchcodec") and (not self.has("torchcodec") or not self.ffmpeg_libraries):
            errors = derived.get("torchaudio_errors", {})
            why = "" if not self.has("torchcodec") else " (torchcodec is there, FFmpeg's libraries are not)"
            model["raise"] = {}
            for name in ("load", "save"):
                message = errors.get(name, "TorchCodec is required") + why
                model["raise"][f"torchaudio.{name}"] = {"type": "ImportError", "message": message}
        if not self.has("torchaudio"):
            model.setdefault("block_modules", []).append("torchaudio")
        model["needs_torchcodec"] = self.has("torchcodec") and derived.get("torchaudio_needs_torchcodec", False)
        return model


@functools.cache
def _load(root: Path) -> tuple[Stack, ...]:
    path = root / STACKS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise StackError(
            f"{path}: the host stacks cannot be read ({error}); regenerate with scripts/derive_stacks.py"
        ) from None
    stacks = []
    for entry in data.get("stack", []):
        try:
            stacks.append(
                Stack(
                    name=entry["name"],
                    summary=entry["summary"],
                    source=entry["source"],
                    checked=entry["checked"],
                    profiles=tuple(entry["profiles"]),
                    default_for=tuple(entry.get("default_for", ())),
                    python=entry["python"],
                    macos=entry["macos"],
                    ffmpeg_on_path=bool(entry["ffmpeg_on_path"]),
                    ffmpeg_libraries=bool(entry.get("ffmpeg_libraries", entry["ffmpeg_on_path"])),
                    packages=dict(entry.get("packages", {})),
                    derived=dict(entry.get("derived", {})),
                    torch_from_tree=bool(entry.get("torch_from_tree", False)),
                    sources={k.removesuffix("_source"): v for k, v in entry.items() if k.endswith("_source")},
                )
            )
        except KeyError as missing:
            raise StackError(f"{path}: a [[stack]] lacks {missing}; regenerate with scripts/derive_stacks.py") from None
    return tuple(stacks)


def _root() -> Path:
    """$LSYNC_PORT_PATCHES's stacks.toml when it has one (rule packs tried out elsewhere), else the shipped."""
    root = patches_dir()
    return root if (root / STACKS_FILE).is_file() else bundled_patches_dir()


def load() -> tuple[Stack, ...]:
    return _load(_root())


def decord_wheels() -> list[dict]:
    """decord's distributions with macOS arm64 wheels, per CPython ([[decord]] in stacks.toml)."""
    path = _root() / STACKS_FILE
    return list(tomllib.loads(path.read_text(encoding="utf-8")).get("decord", []))


def decord_for(python: str) -> list[str]:
    """Which decord distributions have a macOS arm64 wheel for this CPython, with the readers they export."""
    return [
        f"{row['distribution']} {row['version']} ({', '.join(row['readers'])})"
        for row in decord_wheels()
        if python in row["pythons"]
    ]


def known() -> str:
    return ", ".join(f"{s.name} ({', '.join(s.profiles)})" for s in load())


def get(name: str) -> Stack:
    for stack in load():
        if stack.name == name:
            return stack
    raise StackError(f"--stack {name}: no such host stack; known: {known()}")


def for_profile(profile: str, name: str | None = None) -> tuple[Stack, bool]:
    """(the stack to model for a tree of `profile`, whether it is the profile's default)."""
    if name:
        stack = get(name)
        if profile not in stack.profiles:
            fitting = [s.name for s in load() if profile in s.profiles]
            raise StackError(
                f"--stack {name} models {', '.join(stack.profiles)} trees, not {profile}; "
                f"for this tree: {', '.join(fitting) or 'none'}"
            )
        return stack, profile in stack.default_for
    for stack in load():
        if profile in stack.default_for:
            return stack, True
    raise StackError(f"no host stack is the default for {profile}; name one with --stack (known: {known()})")
