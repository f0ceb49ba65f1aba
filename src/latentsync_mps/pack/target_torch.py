"""Which torch a tree will run with on a Mac, and the MPS facts of that torch release.

`verify --device mps-sim` judges the tree against its *target* torch, not the torch installed
here: by default the torch its requirements resolve to on macOS arm64 with Python 3.11 (markers
evaluated with `packaging`, after apply's edits), or the one `--target-torch` names; a tree that
pins none (the ComfyUI wrapper runs on ComfyUI's torch) gets the newest known release, and the
report says so.

The facts per release live in `mps_tables.json` (derived from each release's wheel by
scripts/derive_mps_tables.py: op statuses from native_functions.yaml, torch's own per-op x dtype
MPS expectations from common_mps.py where the release ships it) and `mps_defects.toml` (known Metal
numerics defects, curated by hand with their sources). `table_for()` turns them into the table the
simulator in the child process reads.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from latentsync_mps.pack.errors import TargetTorchError, TomlSyntaxError
from latentsync_mps.pack.toml_files import parse_toml, read_toml

TABLES = Path(__file__).with_name("mps_tables.json")
DEFECTS = Path(__file__).with_name("mps_defects.toml")
# A Mac the tree's requirements are resolved for: Apple Silicon, macOS, CPython 3.11.
DARWIN_ARM64 = {
    "platform_system": "Darwin",
    "sys_platform": "darwin",
    "platform_machine": "arm64",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
# torch's MPS expectation lists folded into findings, and how (see `dtype_rules`). UNDEFINED_XFAILLIST
# is not folded: its entries are random streams and undefined behaviour (ties in sort), not MPS defects.
UNSUPPORTED_LISTS = ("UNIMPLEMENTED_XFAILLIST",)
EXPECTED_FAILURE_LISTS = ("ON_MPS_XFAILLIST", "MACOS_13_3_XFAILLIST", "MACOS_AFTER_13_1_XFAILLIST")
# OpInfo keys (name + variant) whose aten op is not their name with dots as underscores.
OPINFO_ATEN = {
    "nn.functional.interpolatenearest": ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d"),
    "nn.functional.interpolatenearest-exact": (
        "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d",
        "_upsample_nearest_exact3d",
    ),
    "nn.functional.interpolatelinear": ("upsample_linear1d",),
    "nn.functional.interpolatebilinear": ("upsample_bilinear2d",),
    "nn.functional.interpolatebicubic": ("upsample_bicubic2d",),
    "nn.functional.interpolatetrilinear": ("upsample_trilinear3d",),
    "nn.functional.upsample_nearest": ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d"),
    "nn.functional.upsample_bilinear": ("upsample_bilinear2d",),
    "nn.functional.grid_sample": ("grid_sampler_2d", "grid_sampler_3d"),
    # Names that would match an unrelated aten op: not folded.
    "nn.functional.norm": (),
    "nn.functional.interpolatearea": (),  # adaptive_avg_pool*, which MPS runs for divisible sizes
}
# OpInfo keys whose entry names fewer aten ops from some release on, as torch's comment beside it says:
# key -> [(releases, aten ops)], the first match wins, else OPINFO_ATEN.
OPINFO_ATEN_BY_RELEASE = {
    # 2.8 to 2.12: "Unsupported Border padding mode" (every dtype: the 2-D and 3-D samplers). 2.15: "No 5-D
    # bicubic sampler on MPS. float32 only": the 3-D sampler; the 2-D one (AlignRestore's) runs float32.
    "nn.functional.grid_sample": [(">=2.15", ("grid_sampler_3d",))],
}
# Dtypes the simulator already judges on its own (no float64 or complex128 on MPS at all).
OWN_DTYPES = {"float64", "complex128"}


@dataclass
class TargetTorch:
    version: str
    origin: str  # "requirements.txt: torch==2.5.1", "--target-torch", "no pin: newest known"
    note: str = ""  # said in the report when the choice needs explaining

    def to_json(self) -> dict:
        return asdict(self)


@functools.cache
def _data() -> dict:
    try:
        return json.loads(TABLES.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TargetTorchError(
            f"the MPS tables shipped with lsync-port cannot be read ({TABLES.name}: {error}); "
            "regenerate them with scripts/derive_mps_tables.py"
        ) from None


def known_versions() -> list[str]:
    return [release["torch"] for release in _data()["releases"]]


def newest_known() -> str:
    return max(known_versions(), key=Version)


def _known_list() -> str:
    return ", ".join(known_versions())


def check_version(version: str, what: str) -> str:
    """`version` as a known release (local parts such as +cpu dropped), or a clear error."""
    try:
        public = Version(version.strip()).public
    except InvalidVersion:
        raise TargetTorchError(f"{what}: {version!r} is not a version (known: {_known_list()})") from None
    if public not in known_versions():
        raise TargetTorchError(
            f"{what}: no MPS table for torch {public} (known: {_known_list()}); "
            "`lsync-port targets` lists them; from a checkout, `python scripts/check_targets.py --refresh` adds "
            "every newer release with a macOS arm64 wheel"
        )
    return public


def resolve(tree: Path, override: str | None = None) -> TargetTorch:
    """The torch the tree runs on a Mac: --target-torch, else its requirements on Darwin arm64, else
    the newest known release."""
    if override:
        return TargetTorch(check_version(override, "--target-torch"), "--target-torch")
    for where, text in _requirement_lines(tree):
        try:
            requirement = Requirement(text)
        except (InvalidRequirement, InvalidMarker):
            continue
        if canonicalize_name(requirement.name) != "torch":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(DARWIN_ARM64):
            continue
        return _from_specifier(requirement.specifier, f"{where}: {text}")
    newest = newest_known()
    return TargetTorch(
        newest,
        "no pin: newest known",
        f"the tree's requirements pin no torch for macOS (it runs on whatever torch is installed): "
        f"judged against the newest known release, torch {newest}; --target-torch X.Y.Z judges another",
    )


def _from_specifier(specifier: SpecifierSet, origin: str) -> TargetTorch:
    pinned = [s for s in specifier if s.operator in ("==", "===") and "*" not in s.version]
    if len(pinned) == 1:
        return TargetTorch(check_version(pinned[0].version, origin), origin)
    inside = [v for v in known_versions() if specifier.contains(v, prereleases=False)]
    if not inside:
        raise TargetTorchError(f"{origin}: no known torch release satisfies it (known: {_known_list()})")
    newest = max(inside, key=Version)
    return TargetTorch(newest, origin, f"a range: the newest known release inside it, torch {newest}")


def _requirement_lines(tree: Path):
    """(file: line) of every requirement the tree declares: requirements*.txt at its root (requirements.txt
    first, `-r` includes followed once), then pyproject.toml's [project] dependencies."""
    files = sorted(tree.glob("requirements*.txt"), key=lambda p: (p.name != "requirements.txt", p.name))
    seen: set[Path] = set()

    def read(path: Path):
        if path in seen or not path.is_file():
            return
        seen.add(path)
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", raw).strip()
            if line.startswith(("-r ", "--requirement ")):
                yield from read(path.parent / line.split(None, 1)[1])
            elif line and not line.startswith("-"):
                yield path.relative_to(tree).as_posix(), line

    for path in files:
        yield from read(path)
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = parse_toml(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (TomlSyntaxError, UnicodeDecodeError):
            return
        for line in project.get("dependencies", []):
            yield "pyproject.toml", line


# ----------------------------------------------------------------------------------------------
# The table of one release


@functools.cache
def _tables() -> dict[str, dict]:
    return rebuild(_data())


def releases() -> list[dict]:
    """What is known of each release, oldest first: torch, source (the wheel it was derived from),
    wheel, min_macos (from the wheel's platform tag), built (the wheel's build date)."""
    keys = ("torch", "source", "wheel", "min_macos", "built")
    return [{k: release.get(k) for k in keys} for release in _data()["releases"]]


def min_macos(version: str) -> tuple[int, ...] | None:
    """The oldest macOS a known release's macOS arm64 wheel installs on, (14, 0); None if unknown."""
    for release in releases():
        if release["torch"] == version and release["min_macos"]:
            return tuple(int(part) for part in release["min_macos"].split("."))
    return None


def newest_for_macos(macos: tuple[int, ...]) -> str | None:
    """The newest known release whose macOS wheel installs on that macOS."""
    fits = [r["torch"] for r in releases() if r["min_macos"] and min_macos(r["torch"]) <= macos]
    return max(fits, key=Version) if fits else None


def rebuild(data: dict) -> dict[str, dict]:
    """Every release's table, rebuilt from the base and the chain of diffs (mps_tables.json's layout)."""
    ops = {name: status for status, names in data["base"]["ops"].items() for name in names}
    inner = dict(data["base"]["inner"])
    api: dict[str, list[str]] = {}
    out = {}
    for release in data["releases"]:
        api = release.get("mps_api", api)  # stored where it changed
        change = release.get("diff")
        if change is not None:
            for name in change["removed"]:
                ops.pop(name, None)
            for status, names in change["set"].items():
                ops.update(dict.fromkeys(names, status))
            for name in change["inner_removed"]:
                inner.pop(name, None)
            inner.update(change["inner_set"])
        out[release["torch"]] = {
            "version": data["support_version"],
            "torch": release["torch"],
            "source": release["source"],
            "min_macos": release.get("min_macos"),  # the oldest macOS its wheel installs on
            "counts": release["counts"],
            "ops": dict(ops),
            "inner": dict(inner),
            "expectations": release.get("expectations"),
            "mps_api": api,  # the public names of torch.mps and torch.backends.mps
        }
    return out


def table_for(version: str) -> dict:
    """The simulator's table for a known release: op statuses, dtype rules and numerics defects."""
    table = dict(_tables()[check_version(version, "torch")])
    table["dtype_rules"] = dtype_rules(table)
    table["defects"] = defects_for(table["torch"])
    return table


def dtype_rules(table: dict) -> dict[str, list[dict]]:
    """torch's own MPS expectations for this release, by the aten op (base name) the simulator sees.

    Folded: UNIMPLEMENTED_XFAILLIST entries with dtypes (that op x dtype has no MPS kernel: an error);
    the same list's every-dtype entries for ops that do have an MPS kernel (some inputs are unsupported,
    a comment in torch says which: a warning); ON_MPS_XFAILLIST and the macOS-13.3+ lists (expected to
    fail on MPS, an error or a result that differs from the CPU: a warning). Keys that name no dispatched
    aten op (composite ops such as conv2d, which decompose before any backend sees them) are left to
    the OpInfo-level fidelity script."""
    expectations = table.get("expectations") or {}
    bases: dict[str, set[str]] = {}
    for name, status in table["ops"].items():
        bases.setdefault(name.split("::", 1)[1].split(".", 1)[0], set()).add(status)
    rules: dict[str, list[dict]] = {}
    for list_name, entries in expectations.items():
        if list_name not in UNSUPPORTED_LISTS + EXPECTED_FAILURE_LISTS:
            continue
        for key, dtypes in entries.items():
            wanted = [d for d in dtypes if d not in OWN_DTYPES] if dtypes is not None else None
            if wanted == []:
                continue
            for base in _aten_bases(key, bases, table["torch"]):
                has_kernel = "mps" in bases[base]
                if list_name in UNSUPPORTED_LISTS:
                    if wanted is None and not has_kernel:
                        continue  # no MPS kernel at all: the op table already reports it
                    level = "error" if wanted is not None else "warning"
                else:
                    level = "warning"
                rules.setdefault(base, []).append({"key": key, "list": list_name, "dtypes": wanted, "level": level})
    return rules


def _aten_bases(key: str, bases: dict[str, set[str]], version: str) -> list[str]:
    narrowed = [
        ops for releases, ops in OPINFO_ATEN_BY_RELEASE.get(key, []) if SpecifierSet(releases).contains(version)
    ]
    if narrowed:
        names = narrowed[0]
    elif key in OPINFO_ATEN:
        names = OPINFO_ATEN[key]
    else:
        name = key.removeprefix("nn.functional.").replace(".", "_")
        names = (name, f"_{name}")
    # Only ops that reach a backend: a composite-implicit op decomposes before the simulator sees it.
    return [n for n in names if n in bases and bases[n] != {"composite-implicit"}]


@functools.cache
def _defects() -> list[dict]:
    return read_toml(DEFECTS)["defect"]


def defects_for(version: str) -> list[dict]:
    """The known Metal numerics defects that affect this torch release."""
    return [dict(d) for d in _defects() if SpecifierSet(d["torch"]).contains(version, prereleases=True)]


def kernels_missing(have: str, want: str) -> list[str] | None:
    """Ops with an MPS kernel in torch `want` but not in torch `have` (None: no table for one of them)."""
    tables = _tables()
    have, want = Version(have).public, Version(want).public
    if have not in tables or want not in tables:
        return None
    ours = tables[have]["ops"]
    return sorted(op for op, status in tables[want]["ops"].items() if status == "mps" and ours.get(op) != "mps")


def write_table(target: TargetTorch, path: Path) -> Path:
    """The target's table as JSON for the simulator in the child process (spec["mps_table"])."""
    table = table_for(target.version)
    table["target"] = target.to_json()
    path.write_text(json.dumps(table), encoding="utf-8")
    return path
