"""Regenerate patches/stacks.toml: the host stacks a ported tree runs in on a Mac, with every fact's source.

    python scripts/derive_stacks.py --desktop PATH|URL|GITDIR[@REV] [--desktop-commit SHA] [--wheels DIR] [--check]

Facts and where they come from:

- comfyui-desktop-macos: ComfyUI Desktop's compiled macOS requirements (Comfy-Org/desktop,
  assets/requirements/macos.compiled). GitHub cannot be reached from every machine, so the file is
  an input: a path, a URL, or a git directory of Comfy-Org/desktop (optionally @REV); the commit is
  read from git, from a URL that names it, or given with --desktop-commit.
- comfyui-manual-macos: what `pip install torch torchvision torchaudio torchcodec av` resolves to
  today on macOS arm64 for the stack's Python, asked of the registry with uv (wheels only).
- tree-pins: plain LatentSync on the torch its own requirements pin (verify/target_torch.py).
- derived, per stack, from the stack's macOS arm64 wheels (downloaded into --wheels, read with
  zipfile + ast, never imported, never committed): torchvision.io's public names; whether
  torchaudio's load/save go through torchcodec, and its error text; which FFmpeg majors torchcodec
  loads (it bundles none); av's public names and the classes' methods the port calls; decord's
  readers per Python on macOS arm64.

Facts no wheel can say (an `ffmpeg` on PATH, FFmpeg's libraries) are kept below with their sources.
Without the registry: one line, and the file is left as it is (exit 3).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "patches" / "stacks.toml"
PLATFORM_TAG = "macosx_14_0_arm64"  # also matches wheels tagged for older macOS; 11_0 misses torch 2.12+
UV_PLATFORM = "aarch64-apple-darwin"
MANUAL_PYTHON = "3.12"
MANUAL_REQUEST = ["torch", "torchvision", "torchaudio", "torchcodec", "av"]
# The distributions whose wheels the derived facts are read from.
DERIVED_FROM = ("torchvision", "torchaudio", "torchcodec", "av")
DECORD_DISTRIBUTIONS = ("decord", "eva-decord", "decord2")
DECORD_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# What the port's runtime helper calls on av (runtime/_lsync_port.py): checked against each stack's av.
AV_API = [
    "open",
    "VideoFrame.from_ndarray",
    "VideoFrame.to_ndarray",
    "AudioFrame.from_ndarray",
    "AudioFrame.to_ndarray",
    "AudioResampler",
    "AudioResampler.resample",
    "OutputContainer.add_stream",
    "OutputContainer.mux",
    "InputContainer.decode",
    "VideoStream.encode",
    "AudioStream.encode",
]
RECOMMENDED_PYTHON = (
    "ComfyUI README, Manual Install: 'Python 3.13 is very well supported. If you have trouble with some "
    "custom node dependencies on 3.13 you can try 3.12'; 3.12 modelled: the wrapper is such a custom node "
    "(its decord needs decord2, insightface 0.7.3 builds from source) and it is Desktop's Python"
)
# Facts that no wheel or requirements file states, with their sources.
HOST_FACTS = {
    "comfyui-desktop-macos": {
        "summary": "ComfyUI Desktop for macOS (its bundled Python environment)",
        "macos": "14.0",
        "macos_source": (
            "the Mac modelled runs macOS 14 or later (decord2's wheels need it); torch 2.10.0's own wheel is "
            "tagged macosx_11_0_arm64"
        ),
        "ffmpeg_on_path": False,
        "ffmpeg_on_path_source": (
            "Desktop ships no ffmpeg binary, and an app started from the Dock does not inherit a shell's PATH "
            "(Homebrew's /opt/homebrew/bin is not on it): ComfyUI-LatentSyncWrapper issue 110"
        ),
        "ffmpeg_libraries": False,
        "ffmpeg_libraries_source": "no FFmpeg shared libraries in Desktop's environment (av bundles its own)",
    },
    "comfyui-manual-macos": {
        "summary": "A manual ComfyUI install on macOS (python main.py from a terminal, the newest macOS arm64 wheels)",
        "macos": "14.0",
        "macos_source": "the newest torch releases' macOS wheels are tagged macosx_14_0_arm64 (they need macOS 14)",
        "ffmpeg_on_path": True,
        "ffmpeg_on_path_source": (
            "started from a terminal, which has Homebrew's PATH; `brew install ffmpeg` is what torchcodec's "
            "README asks for on macOS"
        ),
        "ffmpeg_libraries": True,
        "ffmpeg_libraries_source": "Homebrew's ffmpeg (torchcodec's README: install FFmpeg with brew or conda)",
    },
    "tree-pins": {
        "summary": "Plain LatentSync on the torch its own requirements pin for macOS arm64 (a terminal)",
        "macos": "14.0",
        "macos_source": "the Mac that mps-sim simulates runs macOS 15 (verify/mpssim); 14.0 is the oldest modelled",
        "ffmpeg_on_path": True,
        "ffmpeg_on_path_source": "LatentSync's README asks for ffmpeg, run from a terminal",
        "ffmpeg_libraries": True,
        "ffmpeg_libraries_source": "the ffmpeg LatentSync's README asks for brings its libraries",
    },
}


class NoRegistry(Exception):
    """The package registry cannot be reached."""


def pip_env() -> dict:
    """pip and uv asked of the real registry, not this machine's configured local indexes."""
    return {**os.environ, "PIP_CONFIG_FILE": os.devnull}


def uv_binary() -> str:
    from shutil import which

    found = which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        sys.exit("derive_stacks: uv is needed (pip install uv, or lsync-port's verify extra)")
    return found


def uv_compile(requirements: list[str], python: str, macos: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        request = Path(folder) / "requirements.in"
        request.write_text("\n".join(requirements) + "\n")
        command = [
            uv_binary(), "pip", "compile", "--python-platform", UV_PLATFORM, "--python-version", python,
            "--only-binary", ":all:", "--no-header", "--no-annotate", "--no-python-downloads", "--quiet", str(request),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, env={**pip_env(), "MACOSX_DEPLOYMENT_TARGET": macos}, timeout=300
        )
    if done.returncode != 0:
        if re.search(r"(dns error|Failed to fetch|error sending request|Could not connect|timed out)", done.stderr):
            raise NoRegistry(done.stderr.strip().splitlines()[-1])
        sys.exit(f"derive_stacks: uv could not resolve {requirements}: {done.stderr.strip()}")
    return dict(line.split("==", 1) for line in done.stdout.splitlines() if "==" in line and not line.startswith("#"))


def has_wheel(distribution: str, python: str) -> str | None:
    """The newest version of `distribution` with a macOS arm64 wheel for CPython `python`, or None
    (pip's dry run reads the wheel's metadata only)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
            "--target", str(Path(folder) / "t"), "--only-binary=:all:", "--platform", PLATFORM_TAG,
            "--python-version", python, "--report", str(report), distribution,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=pip_env(), timeout=300)
        if done.returncode != 0:
            if "No matching distribution" in done.stderr or "from versions: none" in done.stderr:
                return None
            raise NoRegistry(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pip failed")
        return json.loads(report.read_text())["install"][0]["metadata"]["version"]


def wheel(distribution: str, version: str, python: str, folder: Path) -> Path:
    """The macOS arm64 wheel of distribution==version for CPython `python`, downloaded once into `folder`."""
    prefix = re.sub(r"[-.]", "_", distribution).lower() + "-" + version + "-"
    for found in folder.glob("*.whl"):
        if found.name.lower().startswith(prefix) and _wheel_fits(found.name, python):
            return found
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--platform",
        PLATFORM_TAG, "--python-version", python, f"{distribution}=={version}", "-d", str(folder),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=pip_env(), timeout=900)
    if done.returncode != 0:
        raise NoRegistry(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pip download failed")
    return wheel(distribution, version, python, folder)


def _wheel_fits(name: str, python: str) -> bool:
    tag = "cp" + python.replace(".", "")
    return f"-{tag}-" in name or "-py3-none-" in name or "-abi3-" in name


# ----------------------------------------------------------------------------------------------
# Reading a wheel's Python sources (zipfile + ast; nothing is imported)


def _source(archive: zipfile.ZipFile, path: str) -> ast.Module:
    return ast.parse(archive.read(path).decode("utf-8"))


def _all_names(module: ast.Module) -> list[str]:
    for node in module.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return sorted(e.value for e in node.value.elts if isinstance(e, ast.Constant))
    return []


def torchvision_io(path: Path) -> list[str]:
    """torchvision.io's public names: read_video and write_video are gone from 0.26 on (0.29 imports them
    only inside a try, from a Meta-internal module that open-source builds lack)."""
    with zipfile.ZipFile(path) as archive:
        return sorted(_bound_names(archive, "torchvision/io"))


def torchaudio_io(path: Path) -> dict:
    """Whether torchaudio.load/save go through torchcodec, and the ImportError each raises without it."""
    with zipfile.ZipFile(path) as archive:
        init = archive.read("torchaudio/__init__.py").decode()
        codec_file = "torchaudio/_torchcodec.py"
        codec = _source(archive, codec_file) if codec_file in archive.namelist() else None
    needs = codec is not None and "_torchcodec import" in init
    errors = {}
    if codec is not None:
        for function in (n for n in codec.body if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    text = "".join(
                        a.value for a in ast.walk(node.exc) if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    )
                    if "TorchCodec is required" in text:
                        errors["load" if function.name.startswith("load") else "save"] = text
    return {"needs_torchcodec": needs, "errors": errors}


def torchcodec_ffmpeg(path: Path) -> dict:
    """The FFmpeg majors torchcodec loads (libtorchcodec_coreN), and whether the wheel bundles FFmpeg."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    majors = sorted({int(m) for n in names for m in re.findall(r"libtorchcodec_core(\d+)\.", n)})
    bundled = any(re.search(r"libavutil[.\d]*\.dylib$", n) for n in names)
    return {"ffmpeg_majors": majors, "bundles_ffmpeg": bundled}


def _bound_names(archive: zipfile.ZipFile, package: str) -> set[str]:
    """Every public name `package/__init__.py` binds: its __all__, what it imports or defines, and what a
    `from X import *` brings (X's __all__, else its public top-level names, from X.py or X.pyi)."""
    module = _source(archive, f"{package}/__init__.py")
    names = set(_all_names(module))
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name)
                    continue
                target = (node.module or "").replace(".", "/")
                if node.level:
                    target = f"{package}/{target}"
                for candidate in (f"{target}.pyi", f"{target}.py", f"{target}/__init__.pyi"):
                    if candidate in archive.namelist():
                        star = _source(archive, candidate)
                        names |= set(_all_names(star)) or {
                            n.name for n in star.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
                        }
                        break
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def av_api(path: Path) -> dict:
    """Which of AV_API the wheel has: its public names (`_bound_names`), methods from the .pyi stubs."""
    with zipfile.ZipFile(path) as archive:
        top = _bound_names(archive, "av")
        methods: dict[str, set[str]] = {}
        for name in archive.namelist():
            if name.endswith(".pyi"):
                for node in ast.walk(_source(archive, name)):
                    if isinstance(node, ast.ClassDef):
                        found = {f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
                        methods.setdefault(node.name, set()).update(found)
                        if any(isinstance(b, ast.Name) and b.id in methods for b in node.bases):
                            for base in node.bases:
                                methods[node.name] |= methods.get(getattr(base, "id", ""), set())
    have = [n for n in AV_API if (n in top if "." not in n else n.split(".")[1] in methods.get(n.split(".")[0], ()))]
    return {
        "public": sorted(top),
        "port_uses": [n for n in AV_API if n in have],
        "port_missing": sorted(set(AV_API) - set(have)),
    }


def decord_readers(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        module = _source(archive, "decord/__init__.py")
    names = {a.asname or a.name for n in module.body if isinstance(n, ast.ImportFrom) for a in n.names}
    return sorted(n for n in names if n.endswith("Reader"))


# ----------------------------------------------------------------------------------------------
# The stacks


def desktop_requirements(where: str, commit: str | None) -> tuple[str, str, str]:
    """(text, commit, what) of Desktop's compiled requirements from a path, a URL or GITDIR[@REV]."""
    git_dir, _, rev = where.partition("@")
    if Path(git_dir).is_dir():
        rev = rev or "HEAD"
        show = ["git", "--git-dir" if git_dir.endswith((".git", "repo")) else "-C", git_dir]
        text = subprocess.run(
            [*show, "show", f"{rev}:assets/requirements/macos.compiled"], capture_output=True, text=True, check=True
        ).stdout
        log = subprocess.run(
            [*show, "log", "-1", "--format=%H%x00%s%x00%cs", rev], capture_output=True, text=True, check=True
        ).stdout.strip()
        sha, subject, day = log.split("\0")
        return text, sha, f"{subject} ({day})"
    if re.match(r"https?://", where):
        with urllib.request.urlopen(where, timeout=60) as response:  # noqa: S310 - a URL the user gave
            text = response.read().decode()
        named = re.search(r"/([0-9a-f]{7,40})/", where)
        commit = commit or (named.group(1) if named else None)
    else:
        text = Path(where).read_text()
    if not commit:
        sys.exit("derive_stacks: name the Desktop commit the file comes from (--desktop-commit SHA)")
    return text, commit, ""


def parse_compiled(text: str) -> tuple[dict[str, str], str]:
    """(distribution -> version, the Python the file was compiled for) of a `uv pip compile` output."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.split(";")[0].strip()
    python = re.search(r"--python-version\s+(\d+\.\d+)", text)
    return pins, python.group(1) if python else ""


def derived(packages: dict[str, str], python: str, wheels: Path) -> dict:
    out: dict = {}
    if "torchvision" in packages:
        out["torchvision_io"] = torchvision_io(wheel("torchvision", packages["torchvision"], python, wheels))
    if "torchaudio" in packages:
        audio = torchaudio_io(wheel("torchaudio", packages["torchaudio"], python, wheels))
        out["torchaudio_needs_torchcodec"] = audio["needs_torchcodec"]
        out["torchaudio_errors"] = audio["errors"]
    if "torchcodec" in packages:
        out["torchcodec"] = torchcodec_ffmpeg(wheel("torchcodec", packages["torchcodec"], python, wheels))
    if "av" in packages:
        api = av_api(wheel("av", packages["av"], python, wheels))
        out["av_public"] = api["public"]
        out["av_port_missing"] = api["port_missing"]
    return out


def decord_table(wheels: Path) -> list[dict]:
    rows = []
    for distribution in DECORD_DISTRIBUTIONS:
        versions = {python: has_wheel(distribution, python) for python in DECORD_PYTHONS}
        pythons = [p for p, v in versions.items() if v]
        readers = []
        if pythons:
            readers = decord_readers(wheel(distribution, versions[pythons[-1]], pythons[-1], wheels))
        newest = versions[pythons[-1]] if pythons else ""
        rows.append({"distribution": distribution, "version": newest, "pythons": pythons, "readers": readers})
    return rows


def build(args) -> dict:
    wheels = Path(args.wheels)
    wheels.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().isoformat()
    text, commit, subject = desktop_requirements(args.desktop, args.desktop_commit)
    pins, desktop_python = parse_compiled(text)
    keep = ("torch", "torchvision", "torchaudio", "torchcodec", "av", "soundfile", "numpy")
    desktop_packages = {name: pins[name] for name in keep if name in pins}
    desktop_source = f"Comfy-Org/desktop assets/requirements/macos.compiled @ {commit[:8]}" + (
        f" ({subject})" if subject else ""
    )
    manual_packages = uv_compile(MANUAL_REQUEST, MANUAL_PYTHON, HOST_FACTS["comfyui-manual-macos"]["macos"])
    manual_packages = {name: manual_packages[name] for name in keep if name in manual_packages}
    manual_source = (
        f"the registry (PyPI) on {today}: `uv pip compile --python-platform {UV_PLATFORM} --python-version "
        f"{MANUAL_PYTHON} --only-binary :all:` of `{' '.join(MANUAL_REQUEST)}` (MACOSX_DEPLOYMENT_TARGET=14.0)"
    )
    stacks = [
        {
            "name": "comfyui-desktop-macos",
            "source": desktop_source,
            "checked": today,
            "profiles": ["comfyui-latentsyncwrapper"],
            "default_for": ["comfyui-latentsyncwrapper"],
            "python": desktop_python,
            "python_source": f"{desktop_source}: compiled with --python-version {desktop_python}",
            "packages": desktop_packages,
            "packages_source": f"{desktop_source}; a distribution it does not list is absent from the stack",
            "derived": derived(desktop_packages, desktop_python, wheels),
        },
        {
            "name": "comfyui-manual-macos",
            "source": manual_source,
            "checked": today,
            "profiles": ["comfyui-latentsyncwrapper"],
            "default_for": [],
            "python": MANUAL_PYTHON,
            "python_source": RECOMMENDED_PYTHON,
            "packages": manual_packages,
            "packages_source": manual_source,
            "derived": derived(manual_packages, MANUAL_PYTHON, wheels),
        },
        {
            "name": "tree-pins",
            "source": "the tree's own requirements, resolved for macOS arm64 (lsync-port verify/target_torch.py)",
            "checked": today,
            "profiles": ["latentsync"],
            "default_for": ["latentsync"],
            "python": "3.11",
            "python_source": "verify/target_torch.py resolves the tree's requirements for CPython 3.11 on macOS arm64",
            "torch_from_tree": True,
            "packages": {},
            "packages_source": "the tree's requirements.txt (its torch: verify/target_torch.py)",
            "derived": {},
        },
    ]
    for stack in stacks:
        host = HOST_FACTS[stack["name"]]
        stack.update({k: v for k, v in host.items()})
        if stack["derived"]:
            stack["derived_source"] = (
                f"read with zipfile + ast from the stack's macOS arm64 wheels ({PLATFORM_TAG}, "
                f"CPython {stack['python']}) "
                f"by scripts/derive_stacks.py on {today}"
            )
    return {"stacks": stacks, "decord": decord_table(wheels), "checked": today}


# ----------------------------------------------------------------------------------------------
# Writing the TOML (by hand: the standard library reads TOML but does not write it)

ORDER = [
    "name", "summary", "source", "checked", "profiles", "default_for", "python", "python_source", "macos",
    "macos_source", "ffmpeg_on_path", "ffmpeg_on_path_source", "ffmpeg_libraries", "ffmpeg_libraries_source",
    "torch_from_tree", "packages_source", "derived_source",
]  # fmt: skip


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render(data: dict) -> str:
    lines = [
        "# Host stacks: what a ported tree runs in on a Mac. Written by scripts/derive_stacks.py; do not edit by",
        "# hand (change the script's facts and run it again). Every fact has its source beside it (*_source).",
        "# `lsync-port verify|doctor --stack NAME` picks one; `default_for` names the profiles it is the default of.",
        "# [stack.derived]: read from the stack's macOS arm64 wheels (zipfile + ast); what verify hides from the",
        "# tree's code where the stack lacks it.",
        "",
    ]
    for stack in data["stacks"]:
        lines.append("[[stack]]")
        for key in ORDER:
            if key in stack:
                lines.append(f"{key} = {_value(stack[key])}")
        lines.append("")
        lines.append("[stack.packages]  # distribution -> version; a distribution absent from the stack is not listed")
        for name, version in stack["packages"].items():
            lines.append(f"{_key(name)} = {_value(version)}")
        lines.append("")
        lines.append("[stack.derived]")
        for key, value in stack["derived"].items():
            lines.append(f"{key} = {_value(value)}")
        lines.append("")
    lines.append(
        f"# decord's distributions (import name `decord`) with a macOS arm64 wheel, per CPython, on {data['checked']};"
    )
    lines.append("# readers: what its decord/__init__.py exports (read from the newest such wheel).")
    for row in data["decord"]:
        lines.append("[[decord]]")
        for key, value in row.items():
            lines.append(f"{key} = {_value(value)}")
        lines.append(f"source = {_value(f'the registry (PyPI), pip --platform {PLATFORM_TAG}, on ' + data['checked'])}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--desktop", required=True, help="macos.compiled: a path, a URL, or a Comfy-Org/desktop git dir[@REV]"
    )
    parser.add_argument(
        "--desktop-commit", help="the Desktop commit the file comes from (read from git or the URL otherwise)"
    )
    parser.add_argument("--wheels", default=str(Path(tempfile.gettempdir()) / "lsync-port-stack-wheels"))
    parser.add_argument("--check", action="store_true", help="exit 1 when patches/stacks.toml differs, write nothing")
    args = parser.parse_args(argv)
    try:
        text = render(build(args))
    except NoRegistry as error:
        print(f"derive_stacks: the package registry cannot be reached ({error}); {STACKS.name} is unchanged")
        return 3
    if args.check:
        same = STACKS.exists() and _facts(STACKS.read_text()) == _facts(text)
        print(f"{STACKS.name}: {'up to date' if same else 'differs from the registry and the wheels today'}")
        return 0 if same else 1
    STACKS.write_text(text)
    print(f"wrote {STACKS.relative_to(ROOT)}")
    return 0


def _facts(text: str) -> str:
    """The file without its dates (a check on another day is not a change)."""
    return re.sub(r"\d{4}-\d{2}-\d{2}", "DATE", text)


if __name__ == "__main__":
    sys.exit(main())
