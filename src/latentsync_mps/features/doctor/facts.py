"""The facts doctor's checks read, parsed once: `ProbeFacts.parse(facts)` over the plain dict that
doctor gathers (what probe.py found in the target interpreter under "probe", what tree_facts.py found in
the tree under "tree", and a few more).

The readers below take that dict; ProbeFacts holds their answers, typed, so that each check reads
`facts.is_mac` rather than digging through the dict again. A check is written against ProbeFacts
and decorated with `reads_facts`, so that it also takes the dict itself (the tests' hand-made facts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from latentsync_mps.pack import release_facts


def value(x: Any) -> Any:
    """A fact, or None where the probe recorded an error instead ({"error": ...})."""
    return None if isinstance(x, dict) and set(x) == {"error"} else x


def section(facts: dict[str, Any], *keys: str) -> dict[str, Any]:
    """facts[k1][k2]..., or {} where any level is missing or an error."""
    node: Any = facts
    for key in keys:
        node = value(node.get(key)) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """(14, 2, 1) for "14.2.1": packaging's release numbers; for what packaging cannot parse (a
    macOS build string, a vendor suffix), the leading digits of each dotted part up to the first
    part without any."""
    if not text:
        return None
    try:
        return Version(str(text)).release
    except InvalidVersion:
        pass
    parts = []
    for piece in str(text).split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def dotted(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


def size(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def truthy(text: str | None) -> bool:
    return str(text or "").strip().lower() in ("1", "true", "yes", "on")


def macos(facts) -> tuple[int, ...] | None:
    return version_tuple(section(facts, "probe", "platform").get("mac_ver"))


def is_mac(facts) -> bool:
    return section(facts, "probe", "platform").get("system") == "Darwin"


def python_version(facts) -> tuple[int, int]:
    version = section(facts, "probe", "python").get("version") or [0, 0]
    return (int(version[0]), int(version[1]))


def installed(facts) -> dict[str, str]:
    return section(facts, "probe", "distributions").get("installed") or {}


def torch_facts(facts) -> dict[str, Any]:
    return section(facts, "probe", "torch")


def mps_available(facts) -> bool:
    return value(torch_facts(facts).get("mps_available")) is True


def cuda_available(facts) -> bool:
    return value(torch_facts(facts).get("cuda_available")) is True


def helper_device(facts) -> str:
    """The device the runtime helper picks; when it could not say, what torch's answers imply."""
    device = section(facts, "probe", "helper").get("device")
    if device:
        return str(device)
    return "mps" if mps_available(facts) else "cuda" if cuda_available(facts) else "cpu"


def release(facts) -> str | None:
    return (facts.get("tree") or {}).get("release")


def needs_insightface(facts) -> bool | None:
    """True when the tree detects faces with InsightFace (1.6 and later), False for 1.0/1.5: the
    release's `face_detection` in patches/upstreams.toml (a release lsync-port does not know is
    taken to be the newest). None without a tree."""
    tree = facts.get("tree") or {}
    if not tree or tree.get("error") or not tree.get("profile"):
        return None
    known = release_facts.lookup(tree["profile"], tree.get("release")) or release_facts.newest(tree["profile"])
    return known.uses_insightface if known else None


def python_cmd(facts) -> str:
    return str(facts.get("python") or "python")


@dataclass(frozen=True)
class ProbeFacts:
    """The facts, read once. `raw` is the dict itself, for what only one check reads."""

    raw: dict[str, Any] = field(repr=False)
    macos: tuple[int, ...] | None
    is_mac: bool
    python_version: tuple[int, int]
    installed: dict[str, str]
    torch: dict[str, Any]
    mps_available: bool
    cuda_available: bool
    helper_device: str
    release: str | None
    needs_insightface: bool | None
    python_cmd: str

    @classmethod
    def parse(cls, facts: dict[str, Any] | ProbeFacts) -> ProbeFacts:
        if isinstance(facts, ProbeFacts):
            return facts
        return cls(
            raw=facts,
            macos=macos(facts),
            is_mac=is_mac(facts),
            python_version=python_version(facts),
            installed=installed(facts),
            torch=torch_facts(facts),
            mps_available=mps_available(facts),
            cuda_available=cuda_available(facts),
            helper_device=helper_device(facts),
            release=release(facts),
            needs_insightface=needs_insightface(facts),
            python_cmd=python_cmd(facts),
        )

    def section(self, *keys: str) -> dict[str, Any]:
        return section(self.raw, *keys)


Result = TypeVar("Result")


def reads_facts(check: Callable[[ProbeFacts], Result]) -> Callable[[dict[str, Any] | ProbeFacts], Result]:
    """A check written against ProbeFacts that also takes the plain dict (parsed on the way in)."""

    @functools.wraps(check)
    def run(facts: dict[str, Any] | ProbeFacts) -> Result:
        return check(ProbeFacts.parse(facts))

    return run
