"""Derive the MPS tables that `verify --device mps-sim` judges a tree against, one per torch release.

    python scripts/derive_mps_tables.py [WHEEL | DIR | SITE-PACKAGES ...] [--out FILE] [--update] [--cross-check]

Each source is a torch wheel (a zip: nothing is extracted), a folder of wheels, or a site-packages
folder with torch installed. Default: /work/wheels, the macOS arm64 wheels, fetched with
`PIP_CONFIG_FILE=/dev/null pip download --no-deps --only-binary=:all: --platform macosx_14_0_arm64
--python-version 3.11 torch==X.Y.Z -d /work/wheels` (the newest macOS tag: pip also takes wheels
tagged for an older macOS under it, while a `macosx_11_0_arm64` query misses every release from 2.12
on, which are tagged macosx_14_0). scripts/check_targets.py --refresh fetches the new ones itself.

Only tables derived from a macOS arm64 wheel are shipped (tests/test_target_torch.py fails on any
other source); another build (a Linux wheel, an installed torch) is accepted for a local experiment
and said so.

From every release it reads:

* `torchgen/packaged/ATen/native/native_functions.yaml`, turned into the op table by the simulator's
  own `build_support_table` (one implementation for the installed torch and for every release).
* `torch/mps/__init__.py` and `torch/backends/mps/__init__.py`: their public API (`mps_sim.public_api`,
  ast-read), so the simulator leaves the tree only the names its target release has. Stored in a
  release's entry where it differs from the release before.
* `torch/testing/_internal/common_mps.py` where the release ships it (2.8 and later): torch's own
  per-op x dtype expectations for MPS (`UNIMPLEMENTED_XFAILLIST`, `ON_MPS_XFAILLIST`, ...), read
  statically with `ast` for a macOS 15 machine (the simulated one), never imported.
* the wheel's name: its platform tag gives the oldest macOS the release installs on (`min_macos`,
  macosx_14_0_arm64 -> 14.0), and its dist-info/WHEEL entry's time the day it was built (`built`).

Writes derived facts only (op names, statuses, OpInfo keys, dtype names) to
src/latentsync_mps/pack/mps_tables.json: the oldest release in full, every later one as a diff
against the one before it. `--update` keeps the releases already in FILE and adds (or replaces) the
ones given, so a new release needs only its own wheel. `--cross-check` also reads each macOS wheel's
libtorch_cpu.dylib and checks its `wrapper_MPS_<op>` symbols against the yaml's verdict for a few ops
(printed, not stored).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import operator
import re
import sys
import zipfile
from pathlib import Path

from packaging.utils import parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from latentsync_mps.payload import mpssim as mps_sim  # noqa: E402

YAML = "torchgen/packaged/ATen/native/native_functions.yaml"
COMMON_MPS = "torch/testing/_internal/common_mps.py"
DYLIB = "torch/lib/libtorch_cpu.dylib"
OUT = REPO / "src/latentsync_mps/pack/mps_tables.json"
FORMAT = 1
# The macOS the simulator answers with: the expectations' MACOS_VERSION conditions are evaluated for it.
MACOS = 15.0
# Lists of mps_ops_modifier (the forward tests) and whether they apply on a macOS 15 machine. Any other
# list name found is reported, so a new torch release cannot add one unnoticed.
LISTS = {
    "UNIMPLEMENTED_XFAILLIST": True,
    "UNDEFINED_XFAILLIST": True,
    "ON_MPS_XFAILLIST": True,
    "MACOS_13_3_XFAILLIST": True,  # applied when MACOS_VERSION >= 13.3
    "MACOS_AFTER_13_1_XFAILLIST": True,  # applied when macOS >= 13.2
    "MACOS_BEFORE_13_3_XFAILLIST": False,
    "MACOS_BEFORE_14_4_XFAILLIST": False,
    "MACOS_BEFORE_15_0_XFAILLIST": False,
    "UNIMPLEMENTED_XFAILLIST_SPARSE": False,  # sparse tests only
    "EMPTY_OPS_SKIPLIST": False,  # skipped, not expected to fail
    "SKIPLIST": False,
}
CROSS_CHECK_OPS = ("upsample_nearest3d", "_upsample_bicubic2d_aa", "_linalg_det", "upsample_nearest2d")


class Source:
    """One torch release's files: in a wheel (zip) or an installed site-packages folder."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.wheel = self.min_macos = self.built = None
        if self.zip is not None:
            _, version, _, tags = parse_wheel_filename(path.name)
            platforms = {tag.platform for tag in tags}
            self.version = version.public
            self.min_macos = min_macos(platforms)
            self.macos = self.min_macos is not None
            kind = "macOS arm64 wheel" if self.macos else f"{'/'.join(sorted(platforms))} wheel"
            self.origin = f"{kind} {path.name}"
            self.wheel = path.name
            self.built = build_date(self.zip)
        else:
            text = (path / "torch/version.py").read_text(encoding="utf-8")
            found = re.search(r"""__version__\s*=\s*['"]([^'"]+)""", text)
            if found is None:
                raise SystemExit(f"{path}: torch/version.py names no __version__")
            self.version = Version(found.group(1)).public
            self.macos = False
            tags = [
                line.split(":", 1)[1].strip()
                for wheel in path.glob("torch-*.dist-info/WHEEL")
                for line in wheel.read_text(encoding="utf-8").splitlines()
                if line.startswith("Tag:")
            ]
            built = tags[0].rsplit("-", 1)[-1] if tags else "unknown platform"
            self.origin = f"installed torch {found.group(1)} ({built} build, not macOS: the yaml is the same)"

    def python_texts(self):
        """The release's torch/*.py files that can register an MPS kernel (they name "MPS")."""
        if self.zip is not None:
            names = (n for n in self.zip.namelist() if n.startswith("torch/") and n.endswith(".py"))
            datas = (self.zip.read(n) for n in names)
        else:
            datas = (f.read_bytes() for f in (self.path / "torch").rglob("*.py"))
        for data in datas:
            if b"MPS" in data and b"IMPL" in data:
                yield data.decode("utf-8", "replace")

    def read(self, name: str) -> bytes | None:
        if self.zip is not None:
            try:
                return self.zip.read(name)
            except KeyError:
                return None
        target = self.path / name
        return target.read_bytes() if target.is_file() else None


def min_macos(platforms) -> str | None:
    """The oldest macOS a macOS arm64 wheel installs on, from its platform tag(s): macosx_14_0_arm64 -> "14.0";
    None for a wheel of another platform."""
    found = [re.fullmatch(r"macosx_(\d+)_(\d+)_(arm64|universal2)", p) for p in platforms]
    versions = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    return "{}.{}".format(*min(versions)) if versions else None


def build_date(wheel: zipfile.ZipFile) -> str | None:
    """The day the wheel was built: the time stamp of its dist-info/WHEEL entry (written last by the builder)."""
    for info in wheel.infolist():
        if info.filename.endswith(".dist-info/WHEEL"):
            return "{:04d}-{:02d}-{:02d}".format(*info.date_time[:3])
    return None


def sources(arguments: list[str]) -> dict[str, Source]:
    """One source per release; a macOS arm64 wheel wins over any other build of the same version."""
    found: dict[str, Source] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and (path / "torch").is_dir():
            candidates = [Source(path)]
        elif path.is_dir():
            candidates = [Source(w) for w in sorted(path.glob("torch-*.whl"))]
        elif path.suffix == ".whl":
            candidates = [Source(path)]
        else:
            raise SystemExit(f"{path}: not a torch wheel, a folder of wheels or a site-packages folder")
        for source in candidates:
            known = found.get(source.version)
            if known is None or (source.macos and not known.macos):
                found[source.version] = source
    return found


# ----------------------------------------------------------------------------------------------
# common_mps.py, statically


class _Unknown(Exception):
    pass


_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq}


def _value(node: ast.AST, env: dict):
    """A literal of common_mps.py: dicts, sets, lists of `torch.<dtype>`, None, conditions on MACOS_VERSION."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
        return {"double": "float64", "cdouble": "complex128", "half": "float16", "float": "float32"}.get(
            node.attr, node.attr
        )
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Unknown(node.id)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_value(e, env) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_value(k, env): _value(v, env) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.IfExp):
        return _value(node.body if _value(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _value(node.left, env), _value(node.comparators[0], env)
        compare = _COMPARE.get(type(node.ops[0]))
        if compare is None:
            raise _Unknown(ast.dump(node)[:60])
        return compare(left, right)
    if isinstance(node, ast.BoolOp):
        values = [_value(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _value(node.operand, env)
    raise _Unknown(ast.dump(node)[:60])


def expectations(text: str) -> dict:
    """The forward expectations of `mps_ops_modifier` for macOS 15: {list name: {OpInfo key: dtypes or None}},
    None meaning every dtype. Keys are OpInfo names + variant_test_name, as torch's tests key them."""
    tree = ast.parse(text)
    modifier = next(
        (
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name == "mps_ops_modifier" and len(node.body) > 3
        ),
        None,
    )
    if modifier is None:
        raise SystemExit("common_mps.py: no mps_ops_modifier with lists in it")
    env = {"MACOS_VERSION": MACOS, "sparse": False}
    lists: dict[str, dict] = {}
    unknown: list[str] = []

    def visit(statements):
        for statement in statements:
            target = None
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                target, value = statement.target, statement.value
            if isinstance(target, ast.Name) and re.fullmatch(r"[A-Z0-9_]+(LIST|OPS)", target.id):
                try:
                    lists[target.id] = _value(value, env)
                except _Unknown as error:
                    unknown.append(f"{target.id}: {error}")
            elif isinstance(statement, ast.If):
                try:
                    chosen = statement.body if _value(statement.test, env) else statement.orelse
                except _Unknown:
                    continue
                visit(chosen)
            elif (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Attribute)
                and statement.value.func.attr == "update"
                and isinstance(statement.value.func.value, ast.Name)
                and statement.value.func.value.id in lists
            ):
                lists[statement.value.func.value.id].update(_value(statement.value.args[0], env))

    visit(modifier.body)
    if unknown:
        raise SystemExit(f"common_mps.py: cannot read {unknown}")
    out: dict[str, dict] = {}
    for name, value in lists.items():
        if not isinstance(value, dict):
            continue  # SUPPORTED_COMPLEX_OPS and friends: sets of names, not expectations
        if name not in LISTS:
            raise SystemExit(f"common_mps.py: unknown list {name}: add it to LISTS with whether it applies")
        if LISTS[name]:
            out[name] = {key: (sorted(set(d)) if d is not None else None) for key, d in sorted(value.items())}
    return out


# ----------------------------------------------------------------------------------------------
# Tables


def grouped(ops: dict[str, str]) -> dict[str, list[str]]:
    by_status: dict[str, list[str]] = {}
    for name, status in sorted(ops.items()):
        by_status.setdefault(status, []).append(name)
    return by_status


def diff(before: dict, after: dict) -> dict:
    changed = {k: v for k, v in after["ops"].items() if before["ops"].get(k) != v}
    inner = {k: v for k, v in after["inner"].items() if before["inner"].get(k) != v}
    return {
        "set": grouped(changed),
        "removed": sorted(set(before["ops"]) - set(after["ops"])),
        "inner_set": dict(sorted(inner.items())),
        "inner_removed": sorted(set(before["inner"]) - set(after["inner"])),
    }


def mps_api(source: Source) -> dict[str, list[str]]:
    """The public names of the release's torch.mps and torch.backends.mps (what a tree can call)."""
    api = {}
    for module, path in mps_sim.API_FILES.items():
        text = source.read(path)
        if text is None:
            raise SystemExit(f"{source.path}: no {path} in it")
        api[module] = mps_sim.public_api(text.decode("utf-8"))
    return api


def cross_check(source: Source, table: dict) -> str:
    """The dylib's wrapper_MPS_<op> symbols against the yaml's verdict (a macOS wheel only)."""
    binary = source.read(DYLIB)
    if binary is None:
        return "no libtorch_cpu.dylib"
    symbols = set(re.findall(rb"wrapper_MPS_(\w+?)(?:_out|_functional|_\d+)?(?=[^\w]|_[A-Z])", binary))
    names = {s.decode() for s in symbols}
    parts = []
    for op in CROSS_CHECK_OPS:
        in_dylib = any(name == op or name.startswith(op + "_") for name in names if not name.startswith(op + "_b"))
        statuses = {v for k, v in table["ops"].items() if k.split(".")[0] == f"aten::{op}"}
        in_yaml = mps_sim.KERNEL in statuses
        parts.append(
            f"{op}: dylib {'yes' if in_dylib else 'no'}, yaml {'yes' if in_yaml else 'no'}"
            + ("" if in_dylib == in_yaml else "  <-- DISAGREE")
        )
    return "; ".join(parts)


def derive(source: Source, cross: bool) -> dict:
    """One release's entry (facts and its full table) from its wheel or installation."""
    text = source.read(YAML)
    if text is None:
        raise SystemExit(f"{source.path}: no {YAML} in it")
    kernels = mps_sim.python_mps_kernels(source.python_texts())
    table = mps_sim.build_support_table(text.decode("utf-8"), source.version, source.origin, kernels)
    common = source.read(COMMON_MPS)
    entry = {
        "torch": source.version,
        "source": source.origin,
        "wheel": source.wheel,
        "min_macos": source.min_macos,
        "built": source.built,
        "yaml_sha256": hashlib.sha256(text).hexdigest(),
        "counts": dict(sorted(table["counts"].items())),
        "expectations": expectations(common.decode("utf-8")) if common is not None else None,
    }
    note = f"{len(table['ops'])} overloads, {table['counts'].get(mps_sim.KERNEL, 0)} with an MPS kernel"
    note += ", expectations" if common is not None else ", no common_mps.py"
    note += f", macOS {source.min_macos}+" if source.macos else ", NOT a macOS wheel: not for shipping"
    if cross and source.macos:
        note += "\n    cross-check: " + cross_check(source, table)
    print(f"{source.version}: {note}  ({source.origin})")
    return {"entry": entry, "ops": table["ops"], "inner": table["inner"], "mps_api": mps_api(source)}


def shipped(path: Path) -> dict[str, dict]:
    """The releases already in a tables file, in derive()'s shape (for --update)."""
    from latentsync_mps.pack.target_torch import rebuild

    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or data.get("support_version") != mps_sim.SUPPORT_VERSION:
        raise SystemExit(f"{path}: written by another format or simulator version: derive every release anew")
    tables = rebuild(data)
    out = {}
    for release in data["releases"]:
        entry = {k: v for k, v in release.items() if k not in ("diff", "mps_api")}
        table = tables[release["torch"]]
        out[release["torch"]] = {
            "entry": entry,
            "ops": table["ops"],
            "inner": table["inner"],
            "mps_api": table["mps_api"],
        }
    return out


def serialise(releases: dict[str, dict]) -> dict:
    """mps_tables.json: the oldest release in full, every later one as a diff against the one before."""
    data: dict = {"format": FORMAT, "support_version": mps_sim.SUPPORT_VERSION, "macos": MACOS, "releases": []}
    previous = None
    for version in sorted(releases, key=Version):
        release = releases[version]
        entry = dict(release["entry"])
        if previous is None or release["mps_api"] != previous["mps_api"]:
            entry["mps_api"] = release["mps_api"]
        if previous is None:
            data["base"] = {
                "torch": version,
                "ops": grouped(release["ops"]),
                "inner": dict(sorted(release["inner"].items())),
            }
        else:
            entry["diff"] = diff(previous, release)
        data["releases"].append(entry)
        previous = release
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="torch wheels, folders of wheels, site-packages folders")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--update", action="store_true", help="keep the releases already in --out; add the ones given")
    parser.add_argument("--cross-check", action="store_true", help="check the dylib's MPS symbols (slow)")
    args = parser.parse_args()
    if not args.sources:
        args.sources = ["/work/wheels"]
    found = sources(args.sources)
    if not found:
        raise SystemExit("no torch wheel or installation found in " + ", ".join(args.sources))
    releases = shipped(args.out) if args.update and args.out.is_file() else {}
    for version in sorted(found, key=Version):
        releases[version] = derive(found[version], args.cross_check)
    data = serialise(releases)
    # Written whole, then moved into place: an interrupted run leaves the shipped file as it was.
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(data, indent=0, sort_keys=False) + "\n", encoding="utf-8")
    partial.replace(args.out)
    kept = len(releases) - len(found)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(releases)} releases"
        + (f", {kept} kept as they were" if kept else "")
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
