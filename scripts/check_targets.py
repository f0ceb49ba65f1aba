"""Notice when the targets lsync-port ships go stale, and refresh them.

    python scripts/check_targets.py                 # check: exit 1 and say what is new, with the diff
    python scripts/check_targets.py --refresh       # fetch what is new, regenerate, rewrite the files
    python scripts/check_targets.py --dry-run --repo https://github.com/Comfy-Org/desktop=PATH ...

What it compares with patches/watched.toml (what was seen last) and the MPS tables:

* torch, torchvision, torchaudio: every release (from FLOORS on) the package index serves with a
  macOS arm64 wheel for CPython 3.10 to 3.13 (any macOS version: the tag's macOS is recorded), and
  the releases it serves with none (skipped, and listed as such). A torch release with a macOS
  wheel and no MPS table is new: --refresh downloads its wheel (pip download, macosx_14_0_arm64 and
  newer tags) and derives its table (scripts/derive_mps_tables.py --update).
* ComfyUI Desktop's assets/requirements/macos.compiled (the stack ComfyUI Desktop bundles): its
  sha256 at the repository's HEAD against the one recorded; a change shows as a diff of its pins.
* LatentSync and the ComfyUI wrapper (the repositories in patches/upstreams.toml): the HEAD of
  their default branch (git ls-remote) against the one recorded.

When anything is new, --refresh also regenerates the host stacks (scripts/derive_stacks.py, where the
checkout has it) from Desktop's file at the HEAD read here and the registry.

Inputs can be local for a dry run or a test: `--index` a folder of PEP 691 JSON pages
(<project>.json) instead of a URL, `--repo URL=PATH` a local git repository (a mirror) for a
GitHub URL. `--dry-run` checks and prints what --refresh would change, and writes nothing.
Nothing is written unless every query answered: an unreachable index or repository is one line
(exit 2) and leaves every shipped file as it was.

Exit: 0 nothing new; 1 something new (the diff, and the command that refreshes); 2 a source could
not be reached or read.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import tomllib
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parent.parent
WATCHED = REPO / "patches/watched.toml"
UPSTREAMS = REPO / "patches/upstreams.toml"
TABLES = REPO / "src/latentsync_mps/pack/mps_tables.json"
STACKS_SCRIPT = REPO / "scripts/derive_stacks.py"  # regenerates patches/stacks.toml (the host stacks)
INDEX = "https://pypi.org/simple"
REFRESH = "python scripts/check_targets.py --refresh"
# The oldest release of each package the tool tracks: torch 2.1 is the oldest any known upstream
# release pins (LatentSync 1.0: torch==2.1.2); torchvision and torchaudio of the same generation.
FLOORS = {"torch": "2.1.0", "torchvision": "0.16.0", "torchaudio": "2.1.0"}
PYTHONS = ("cp310", "cp311", "cp312", "cp313")
DESKTOP = {
    "repository": "https://github.com/Comfy-Org/desktop",
    "path": "assets/requirements/macos.compiled",
}
TIMEOUT = 30


class Unreachable(Exception):
    """A source that did not answer: the run stops and writes nothing."""


# ----------------------------------------------------------------------------------------------
# The package index


def index_files(index: str, project: str) -> list[dict]:
    """The files the index serves for a project (PEP 691 JSON): [{"filename", "yanked", ...}]."""
    if not re.match(r"https?://", index):
        page = Path(index) / f"{project}.json"
        try:
            return json.loads(page.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError) as error:
            raise Unreachable(f"the package index {index} has no readable {page.name}: {error}") from None
    request = urllib.request.Request(
        f"{index.rstrip('/')}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return json.load(answer)["files"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"the package index {index} cannot be reached ({reason})") from None


def macos_arm64(filename: str) -> str | None:
    """The oldest macOS a wheel installs on if it is a macOS arm64 wheel for CPython 3.10 to 3.13
    ("14.0"), else None."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    found = []
    for tag in tags:
        pure = tag.interpreter in ("py3", "py30") or (tag.interpreter.startswith("py3") and tag.abi == "none")
        python_ok = tag.interpreter in PYTHONS or (tag.abi == "abi3" and tag.interpreter <= PYTHONS[-1]) or pure
        match = re.fullmatch(r"macosx_(\d+)_(\d+)_(arm64|universal2)", tag.platform)
        if python_ok and match:
            found.append((int(match.group(1)), int(match.group(2))))
    return "{}.{}".format(*min(found)) if found else None


def releases(files: list[dict], floor: str) -> tuple[dict[str, str], list[str]]:
    """({version: min macOS} of the releases with a macOS arm64 wheel, [releases with none]), from `floor` on."""
    with_wheel: dict[str, str] = {}
    seen: set[str] = set()
    for file in files:
        name = file["filename"]
        if not name.endswith(".whl") or file.get("yanked"):
            continue
        try:
            version = parse_wheel_filename(name)[1]
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if version.is_prerelease or version.local or version < Version(floor):
            continue
        seen.add(version.public)
        macos = macos_arm64(name)
        if macos is not None:
            known = with_wheel.get(version.public)
            with_wheel[version.public] = macos if known is None else min(known, macos, key=Version)
    ordered = sorted(with_wheel, key=Version)
    return {v: with_wheel[v] for v in ordered}, sorted(seen - set(with_wheel), key=Version)


# ----------------------------------------------------------------------------------------------
# git repositories


def local_for(url: str, repos: dict[str, str]) -> str:
    return repos.get(url.rstrip("/").removesuffix(".git"), url)


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unreachable(f"git {args[0]}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unreachable(f"git {' '.join(args)}: {last}")
    return done.stdout


def head(url: str, repos: dict[str, str]) -> tuple[str, str | None]:
    """(sha, date or None) of the default branch's HEAD: `git ls-remote` for a URL; a local repository
    (a mirror given with --repo) also gives its date."""
    where = local_for(url, repos)
    line = git("ls-remote", where, "HEAD").split()
    if not line:
        raise Unreachable(f"{url}: git ls-remote gave no HEAD")
    sha = line[0]
    date = git("-C", where, "log", "-1", "--format=%cs", sha).strip() if Path(where).is_dir() else None
    return sha, date


def desktop_file(repos: dict[str, str]) -> tuple[str, str]:
    """(HEAD sha, text) of ComfyUI Desktop's macOS requirements file."""
    url = DESKTOP["repository"]
    sha, _ = head(url, repos)
    where = local_for(url, repos)
    if Path(where).is_dir():
        return sha, git("-C", where, "show", f"{sha}:{DESKTOP['path']}")
    owner_name = url.removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{owner_name}/{sha}/{DESKTOP['path']}"
    try:
        with urllib.request.urlopen(raw, timeout=TIMEOUT) as answer:
            return sha, answer.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as error:
        raise Unreachable(f"{raw} cannot be read ({getattr(error, 'reason', error)})") from None


def pins(text: str) -> dict[str, str]:
    """name==version lines of a compiled requirements file, by canonical name."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line.strip())
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------------------------
# The record (patches/watched.toml) and the tables


def upstream_repositories() -> list[str]:
    data = tomllib.loads(UPSTREAMS.read_text(encoding="utf-8"))
    return sorted({release["repository"] for release in data.get("release", [])})


def observe(index: str, repos: dict[str, str]) -> dict:
    """Everything the sources say now, in watched.toml's shape (without `checked`)."""
    packages = {}
    for name, floor in FLOORS.items():
        found, skipped = releases(index_files(index, name), floor)
        packages[name] = {"floor": floor, "macos_arm64": found, "no_macos_wheel": skipped}
    sha, text = desktop_file(repos)
    heads = []
    for url in upstream_repositories():
        commit, date = head(url, repos)
        heads.append({"repository": url, "head": commit, "date": date})
    desktop = {
        **DESKTOP,
        "commit": sha,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "pins": pins(text),
    }
    return {"index": index, "packages": packages, "desktop": desktop, "upstream": heads}


def _quote(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_quote(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_quote(k)} = {_quote(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # a TOML basic string is a JSON string for these values


def render(record: dict) -> str:
    """watched.toml's text: stable (sorted, one fact a line) so that a refresh's diff shows what changed."""
    lines = [
        "# What the package index and the upstream repositories served when last checked: written by",
        f"# `{REFRESH}`, read by `lsync-port targets` and by the scheduled check",
        "# (.github/workflows/upstream.yml, job `targets`), which fails when the sources serve something newer.",
        "# Do not edit by hand. `macos_arm64`: version = the oldest macOS its macOS arm64 wheel installs on.",
        "",
        f"checked = {_quote(record['checked'])}",
        f"index = {_quote(record['index'])}",
    ]
    for name, entry in record["packages"].items():
        lines += ["", f"[packages.{name}]", f"floor = {_quote(entry['floor'])}"]
        lines += [f"no_macos_wheel = {_quote(entry['no_macos_wheel'])}", "", f"[packages.{name}.macos_arm64]"]
        lines += [f"{_quote(v)} = {_quote(m)}" for v, m in entry["macos_arm64"].items()]
    desktop = record["desktop"]
    lines += ["", "[desktop]"]
    lines += [f"{key} = {_quote(desktop[key])}" for key in ("repository", "path", "commit", "sha256")]
    lines += ["", "[desktop.pins]"] + [f"{_quote(k)} = {_quote(v)}" for k, v in desktop["pins"].items()]
    for entry in record["upstream"]:
        lines += ["", "[[upstream]]"] + [f"{key} = {_quote(entry[key])}" for key in ("repository", "head", "date")]
    return "\n".join(lines) + "\n"


def merge(old: dict, new: dict, today: str) -> dict:
    """The record to write: `new`, dated today only where something changed (a daily check that finds
    nothing new leaves the file byte for byte as it was). A Desktop file whose content did not change
    keeps the commit it was recorded at, and a head read without a date keeps nothing stale."""
    merged = json.loads(json.dumps(new))
    if old.get("desktop", {}).get("sha256") == merged["desktop"]["sha256"]:
        merged["desktop"]["commit"] = old["desktop"]["commit"]
    old_heads = {h["repository"]: h for h in old.get("upstream", [])}
    for entry in merged["upstream"]:
        before = old_heads.get(entry["repository"])
        if before and before["head"] == entry["head"] and entry["date"] is None:
            entry["date"] = before.get("date")
        if entry["date"] is None:
            entry["date"] = today  # a GitHub URL gives no date: the day the new head was seen
    unchanged = {k: v for k, v in old.items() if k != "checked"} == merged
    merged = {"checked": old["checked"] if unchanged and "checked" in old else today, **merged}
    return merged


def tables_missing(record: dict) -> list[str]:
    """torch releases with a macOS arm64 wheel and no MPS table."""
    shipped = {r["torch"] for r in json.loads(TABLES.read_text(encoding="utf-8"))["releases"]}
    return [v for v in record["packages"]["torch"]["macos_arm64"] if v not in shipped]


def news(old: dict, new: dict, missing: list[str]) -> list[str]:
    """What is new, one line each, for a person."""
    lines = [f"torch {v}: a macOS arm64 wheel and no MPS table" for v in missing]
    for name, entry in new["packages"].items():
        before = old.get("packages", {}).get(name, {})
        for version in entry["macos_arm64"]:
            if version not in before.get("macos_arm64", {}):
                lines.append(
                    f"{name} {version}: new on the index with a macOS arm64 wheel "
                    f"(macOS {entry['macos_arm64'][version]}+)"
                )
        for version in entry["no_macos_wheel"]:
            if version not in before.get("no_macos_wheel", []):
                lines.append(f"{name} {version}: new on the index with no macOS arm64 wheel (skipped)")
    if old.get("desktop", {}).get("sha256") != new["desktop"]["sha256"]:
        before = old.get("desktop", {}).get("pins", {})
        after = new["desktop"]["pins"]
        changed = [
            f"{k} {before.get(k, '-')} -> {after.get(k, '-')}"
            for k in sorted({*before, *after})
            if before.get(k) != after.get(k)
        ]
        lines.append(
            f"ComfyUI Desktop's {DESKTOP['path']} changed (commit {new['desktop']['commit'][:8]}): "
            + (", ".join(changed) if changed else "same pins, other lines")
            + "; review patches/stacks.toml's Desktop stack"
        )
    old_heads = {h["repository"]: h["head"] for h in old.get("upstream", [])}
    for entry in new["upstream"]:
        if old_heads.get(entry["repository"]) != entry["head"]:
            lines.append(
                f"{entry['repository']}: new HEAD {entry['head'][:7]} "
                f"(was {str(old_heads.get(entry['repository']))[:7]}): "
                "the upstream matrix re-ports it; add a release to patches/upstreams.toml if it is one"
            )
    return lines


def fetch_wheels(versions: list[str], into: Path) -> list[Path]:
    """The macOS arm64 wheels (CPython 3.11) of torch releases, with pip from the real index."""
    wheels = []
    for version in versions:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", "macosx_14_0_arm64", "--python-version", "3.11", f"torch=={version}", "-d", str(into),
        ]  # fmt: skip
        # The real index, not a local pip configuration (one may cap torch's version).
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise Unreachable(f"pip download torch=={version}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
        wheels += [w for w in into.glob(f"torch-{version}-*.whl")]
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Refresh after a failed scheduled check: " + REFRESH + ", then review and commit the diff.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--refresh", action="store_true", help="fetch what is new and rewrite the shipped files")
    mode.add_argument(
        "--dry-run", action="store_true", help="check and show what --refresh would change; write nothing"
    )
    parser.add_argument(
        "--index", default=INDEX, help=f"package index URL (PEP 691), or a folder of <project>.json (default {INDEX})"
    )
    parser.add_argument(
        "--repo", action="append", default=[], metavar="URL=PATH",
        help="read a GitHub repository from a local git repository (a mirror) instead; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--wheels", type=Path, help="keep the downloaded torch wheels here (default: a temporary folder)"
    )
    parser.add_argument("--watched", type=Path, default=WATCHED, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--today", default=None, help=argparse.SUPPRESS)  # tests: a fixed date
    args = parser.parse_args(argv)
    repos = {}
    for item in args.repo:
        url, _, path = item.partition("=")
        if not path:
            parser.error(f"--repo {item!r}: give URL=PATH")
        repos[url.rstrip("/").removesuffix(".git")] = path
    today = args.today or datetime.date.today().isoformat()

    old = tomllib.loads(args.watched.read_text(encoding="utf-8")) if args.watched.is_file() else {}
    try:
        new = merge(old, observe(args.index, repos), today)
    except Unreachable as error:
        print(f"error: {error}; nothing was changed", file=sys.stderr)
        return 2
    missing = tables_missing(new)
    found = news(old, new, missing)
    before = args.watched.read_text(encoding="utf-8") if args.watched.is_file() else ""
    after = render(new)
    diff = "".join(
        difflib.unified_diff(before.splitlines(True), after.splitlines(True), str(args.watched), "refreshed")
    )

    if not args.refresh:
        if not found and not diff:
            print(f"up to date: {len(new['packages']['torch']['macos_arm64'])} torch releases with a macOS arm64 "
                  f"wheel, all with an MPS table; Desktop requirements and upstream heads as recorded")  # fmt: skip
            return 0
        print("\n".join(["stale:", *(f"  {line}" for line in found)]))
        if diff:
            print(diff, end="")
        print(f"refresh with: {REFRESH}" + (" (dry run: nothing written)" if args.dry_run else ""))
        return 1

    # The host stacks (patches/stacks.toml) follow Desktop's file and the newest wheels: their own
    # script regenerates them, first, since it leaves its file as it was when a source is unreachable.
    if found and STACKS_SCRIPT.is_file():
        desktop = local_for(DESKTOP["repository"], repos)
        if not Path(desktop).is_dir():
            owner_name = DESKTOP["repository"].removeprefix("https://github.com/")
            desktop = f"https://raw.githubusercontent.com/{owner_name}/{new['desktop']['commit']}/{DESKTOP['path']}"
        else:
            desktop += f"@{new['desktop']['commit']}"
        command = [sys.executable, str(STACKS_SCRIPT), "--desktop", desktop]
        if args.wheels:
            command += ["--wheels", str(args.wheels)]
        if subprocess.run(command, check=False).returncode != 0:
            print(f"error: {STACKS_SCRIPT.name} failed; nothing was changed", file=sys.stderr)
            return 2
    if missing:
        from tempfile import TemporaryDirectory

        with TemporaryDirectory() as scratch:
            into = args.wheels or Path(scratch)
            into.mkdir(parents=True, exist_ok=True)
            try:
                wheels = fetch_wheels(missing, into)
            except Unreachable as error:
                print(f"error: {error}; nothing was changed", file=sys.stderr)
                return 2
            derive = [sys.executable, str(REPO / "scripts/derive_mps_tables.py"), "--update", *map(str, wheels)]
            if subprocess.run(derive, check=False).returncode != 0:
                print("error: derive_mps_tables.py failed; the tables are as they were", file=sys.stderr)
                return 2
    if diff:
        with tempfile.NamedTemporaryFile("w", dir=args.watched.parent, delete=False, encoding="utf-8") as partial:
            partial.write(after)
        Path(partial.name).replace(args.watched)
    print("\n".join(["refreshed:", *(f"  {line}" for line in found)]) if found else "refreshed: nothing new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
