"""The texts file of a rule pack (patches/torch-cuda.toml): what to say about each name of torch's
CUDA namespaces. A rule's `texts` option names the file; the loader (ruleset.py) reads it here and
hands it to the rule's kind as `rule.inputs["texts"]`."""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, replace
from pathlib import Path

from latentsync_mps.pack.errors import TextsFileError, TomlSyntaxError
from latentsync_mps.pack.paths import bundled_patches_dir, patches_dir
from latentsync_mps.pack.toml_files import read_toml


@dataclass(frozen=True)
class CudaText:
    kind: str | None  # None: the finding kind of the rule that reports the name
    severity: str
    why: str
    fix: str


@dataclass(frozen=True)
class CudaTexts:
    """What to say about each name of torch's CUDA namespaces: its own entry, else the first
    shape whose fnmatch patterns fit, else the default (the layout of patches/torch-cuda.toml)."""

    apis: dict[str, CudaText]
    shapes: tuple[tuple[tuple[str, ...], CudaText], ...]
    default: CudaText

    def __call__(self, name: str, finding: str) -> CudaText:
        """The text for `name`; `finding` is its kind where the file names none."""
        text = self._entry(name)
        return text if text.kind is not None else replace(text, kind=finding)

    def _entry(self, name: str) -> CudaText:
        if name in self.apis:
            return self.apis[name]
        for patterns, text in self.shapes:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                return text
        return self.default


def texts_for(file_name: str, rule_file: Path) -> CudaTexts:
    """The texts file of the rule pack `rule_file` comes from (<pack>/findings/x.toml). A bundled
    rule (a pack of one's own without findings/) reads the pack in use (LSYNC_PORT_PATCHES) if it
    has the file; else the bundled file."""
    own = rule_file.resolve().parent.parent
    bundled = bundled_patches_dir().resolve()
    for root in ([] if own == bundled else [own]) + [patches_dir(), bundled]:
        if (root / file_name).is_file():
            return _load(root / file_name)
    raise TextsFileError(f"no {file_name} in the rule pack or the bundled one")


@functools.cache
def _load(path: Path) -> CudaTexts:
    try:
        data = read_toml(path)
        default = _text(data["default"], CudaText(None, "error", "", ""))
        shapes = tuple((tuple(entry["match"]), _text(entry, default)) for entry in data.get("shape", []))
        apis = {name: _text(entry, default) for name, entry in data.get("api", {}).items()}
    except (OSError, TomlSyntaxError, KeyError, TypeError) as error:
        # The parser's own name for a syntax error, as this message has always said it.
        name = "TOMLDecodeError" if isinstance(error, TomlSyntaxError) else type(error).__name__
        raise TextsFileError(f"{path} is not a texts file ({name}: {error})") from None
    return CudaTexts(apis, shapes, default)


def _text(entry: dict, default: CudaText) -> CudaText:
    return CudaText(
        entry.get("kind", default.kind), entry.get("severity", default.severity), entry["why"], entry["fix"]
    )
