"""Do the tree's requirements install on the modelled Mac? Resolved for its platform and Python, wheels only.

pip cannot answer this from Linux: with `--platform` it still evaluates markers such as
`platform_system != "Darwin"` on the machine it runs on. uv resolves for another platform with that
platform's markers:

    MACOSX_DEPLOYMENT_TARGET=<stack macOS> uv pip compile --python-platform aarch64-apple-darwin \\
        --python-version <stack Python> --only-binary :all: [-c <the stack's torch family>] requirements.txt

uv stops at the first requirement it cannot satisfy; that one is named with its fix, taken out of
a copy of the file, and the rest resolved again, so that every requirement without a wheel is named
(at most MAX_ROUNDS). Without the registry (or without uv) the answer is one line saying that it
could not check. The command runner is injectable (`run=`): the tests give it uv's recorded outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from latentsync_mps.pack.stacks import Stack

UV_PLATFORM = "aarch64-apple-darwin"
MAX_ROUNDS = 8
TIMEOUT_S = 180
# The distributions a stack owns: a custom node installs into the host's environment and must not
# replace them (ComfyUI's torch), so they are constraints of the resolution.
STACK_OWNS = ("torch", "torchvision", "torchaudio", "torchcodec", "av")
# What to do about a requirement with no macOS arm64 wheel, for the ones a LatentSync tree has.
FIXES = {
    "decord": "plain decord has no macOS wheel at all: `lsync-port apply` replaces it with eva-decord "
    "(CPython below 3.12) and decord2 (3.12 and later, macOS 14)",
    "eva-decord": "eva-decord has macOS arm64 wheels for CPython 3.8 to 3.11 only: decord2 from 3.12 "
    "(`lsync-port apply` splits the requirement by marker)",
    "insightface": "insightface 0.7.3 is sdist only: pip compiles it on the Mac, which needs Xcode's command "
    "line tools (`xcode-select --install`) and Cython; or a prebuilt wheel of your own",
    "python-speech-features": "an sdist only, pure Python: pip builds it on the Mac in seconds (no compiler); "
    "allow source builds for it",
    "antlr4-python3-runtime": "an sdist only, pure Python (omegaconf 2.x needs 4.9.*): pip builds it on the "
    "Mac in seconds (no compiler); allow source builds for it",
    "imageio-ffmpeg": "this release has no macOS arm64 wheel: a newer imageio-ffmpeg (0.8.1 has one, with its "
    "own ffmpeg) installs as a wheel",
    "onnxruntime-gpu": "no macOS wheel: `lsync-port apply` replaces it with onnxruntime (CoreML provider)",
    "xformers": "no macOS wheel, and not used on MPS: `lsync-port apply` removes it",
    "triton": "no macOS wheel (CUDA only): `lsync-port apply` removes it",
}
BUILDS_ON_MAC = {"insightface", "python-speech-features", "antlr4-python3-runtime"}  # an sdist pip can build there
NO_REGISTRY = re.compile(
    r"(Failed to fetch|error sending request|dns error|Connection refused|tcp connect error|"
    r"Could not connect|timed out|Network is unreachable|failed to lookup address)",
    re.IGNORECASE,
)

Runner = Callable[[list[str], dict], "subprocess.CompletedProcess[str]"]


@dataclass
class Missing:
    requirement: str  # the canonical distribution name
    why: str  # uv's reason, in short
    fix: str
    builds_on_mac: bool = False  # an sdist pip can build there (a warning, not a blocker)


@dataclass
class Resolution:
    status: str  # resolved | unresolvable | unchecked
    stack: str
    python: str
    platform: str
    requirements: str  # the file resolved
    pins: dict[str, str] = field(default_factory=dict)  # what resolved (the last round)
    missing: list[Missing] = field(default_factory=list)
    message: str = ""  # one line (unchecked: why)
    seconds: float = 0.0
    rounds: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Resolution:
        return cls(**{**data, "missing": [Missing(**m) for m in data["missing"]]})

    def line(self) -> str:
        where = f"macOS {self.platform} arm64, CPython {self.python} (stack {self.stack})"
        if self.status == "unchecked":
            return f"could not check that {self.requirements} resolves on {where}: {self.message}"
        if self.status == "resolved":
            return f"{self.requirements} resolves on {where}, wheels only: {len(self.pins)} distributions"
        names = ", ".join(m.requirement for m in self.missing)
        return f"{self.requirements} does not resolve on {where}, wheels only: no wheel for {names}"


SWITCH = "LSYNC_PORT_MAC_RESOLVE"


def enabled() -> bool:
    """`LSYNC_PORT_MAC_RESOLVE=off` skips the resolution (the test suite sets it: it needs no network)."""
    return os.environ.get(SWITCH, "on").lower() not in ("off", "0", "no")


def disabled(stack: Stack) -> Resolution:
    return Resolution("unchecked", stack.name, stack.python, stack.macos, "requirements.txt", message=f"{SWITCH}=off")


def run_uv(command: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)


def uv_binary() -> str | None:
    try:
        import uv  # the verify extra's; a PATH uv otherwise
    except ImportError:
        from shutil import which

        return which("uv")
    try:
        return uv.find_uv_bin()
    except FileNotFoundError:
        return None


def requirements_file(tree: Path) -> Path | None:
    path = tree / "requirements.txt"
    return path if path.is_file() else None


def resolve(
    tree: Path, stack: Stack, run: Runner | None = None, uv: str | None = None, index_url: str | None = None
) -> Resolution:
    """Resolve the tree's requirements.txt for the stack's Mac (see the module's docstring)."""
    requirements = requirements_file(tree)
    result = Resolution("unchecked", stack.name, stack.python, stack.macos, "requirements.txt")
    if requirements is None:
        result.message = "the tree has no requirements.txt"
        return result
    uv = uv or uv_binary()
    if run is None and uv is None:
        result.message = "uv is not installed (it is in lsync-port's verify extra: pip install 'lsync-port[verify]')"
        return result
    run = run or run_uv
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lsync-port-resolve-") as folder:
        work = Path(folder)
        lines = requirements.read_text(encoding="utf-8", errors="replace").splitlines()
        constraints = work / "stack-constraints.txt"
        owned = {n: v for n, v in stack.packages.items() if n in STACK_OWNS}
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in owned.items()))
        for round_ in range(1, MAX_ROUNDS + 1):
            request = work / "requirements.txt"
            request.write_text("\n".join(lines) + "\n")
            command = [
                uv or "uv", "pip", "compile", "--python-platform", UV_PLATFORM, "--python-version", stack.python,
                "--only-binary", ":all:", "--no-header", "--no-annotate", "--no-python-downloads", "--quiet",
                "-c", str(constraints), str(request),
            ]  # fmt: skip
            if index_url:
                command[3:3] = ["--index-url", index_url]
            env = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": stack.macos, "PIP_CONFIG_FILE": os.devnull}
            try:
                done = run(command, env)
            except (OSError, subprocess.TimeoutExpired) as error:
                result.message = f"uv could not run ({type(error).__name__}: {error})"
                break
            result.rounds = round_
            if done.returncode == 0:
                result.pins = parse_pins(done.stdout)
                result.status = "resolved" if not result.missing else "unresolvable"
                break
            found = parse_failure(done.stderr)
            if found is None:
                result.status = "unchecked"
                result.message = _last_cause(done.stderr)
                if not NO_REGISTRY.search(done.stderr):
                    result.message = f"uv failed: {result.message}"
                else:
                    result.message = f"the package registry cannot be reached ({result.message})"
                result.missing = []
                break
            result.missing.append(found)
            kept = [line for line in lines if _name(line) != found.requirement]
            if kept == lines:  # a dependency of a requirement, not one of the file's: nothing to take out
                result.status = "unresolvable"
                break
            lines = kept
        else:
            result.status = "unresolvable"
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _name(line: str) -> str | None:
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    try:
        return canonicalize_name(Requirement(text).name)
    except InvalidRequirement:
        return None


def parse_pins(stdout: str) -> dict[str, str]:
    pins = {}
    for line in stdout.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def parse_failure(stderr: str) -> Missing | None:
    """The requirement uv could not satisfy, from its "No solution found" error; None for any other error."""
    if "No solution found" not in stderr:
        return None
    required = re.findall(r"you require ([A-Za-z0-9][A-Za-z0-9._-]*)", stderr)
    if not required:
        return None
    name = canonicalize_name(required[0])
    # The distribution that has no wheel: the requirement itself, or one of its dependencies.
    culprit = re.search(r"Because (?:only )?([A-Za-z0-9][A-Za-z0-9._-]*?)(?:[<>=!~][^ ]*)? (?:has|have) no ", stderr)
    culprit_name = canonicalize_name(culprit.group(1)) if culprit else name
    if re.search(r"has no usable wheels", stderr):
        why = "no wheel at all (an sdist only, and source builds are off)"
    elif "matching platform tag" in stderr:
        tag = re.search(r"matching platform tag \(e\.g\., `([^`]+)`\)", stderr)
        why = f"no wheel for {tag.group(1) if tag else 'macOS arm64'}"
    elif "matching Python ABI tag" in stderr:
        abi = re.search(r"matching Python ABI tag \(e\.g\., `([^`]+)`\)", stderr)
        why = f"no wheel for {abi.group(1) if abi else 'this Python'}"
    else:
        why = _last_cause(stderr)
    available = re.search(r"Wheels are available for `[^`]+` \(v([^)]+)\) on the following platforms: (.+)", stderr)
    if available:
        why += f"; its wheels (v{available.group(1)}) are for {available.group(2).replace('`', '')} only"
    if culprit_name != name:
        why = f"its dependency {culprit_name}: {why}"
    fix = FIXES.get(culprit_name, "no macOS arm64 wheel: find one, build it on the Mac, or drop the requirement")
    return Missing(name, why, fix, culprit_name in BUILDS_ON_MAC)


def _last_cause(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip() and not line.startswith("warning")]
    causes = [line.removeprefix("cause:").strip() for line in lines if line.startswith(("cause:", "error:"))]
    return (causes or lines or ["no output"])[-1]
