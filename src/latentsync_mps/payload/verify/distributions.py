"""Which distribution installs an import name, and the one line that says what an interpreter lacks.

`import google.protobuf` fails when protobuf is missing: pip needs `protobuf`, not `google`. Stdlib
only: verify's harness loads this file by path under the tree's interpreter, which need not have
lsync-port installed; before a run, lsync-port runs it as a script in the interpreter it checks
(host/needs.py), which answers for itself: what it lacks, by distribution, and the tree's pins.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Import names whose distribution has another name. Checked before what is installed says
# (packages_distributions): a namespace such as `google` is also shipped by packages that are not
# the one missing.
DISTRIBUTIONS = {
    "google": "protobuf",
    "cv2": "opencv-python",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "imageio_ffmpeg": "imageio-ffmpeg",
    "face_alignment": "face-alignment",
    "DeepCache": "DeepCache",
    "huggingface_hub": "huggingface-hub",
}


def distribution_for(module: str, python: tuple[int, int] | None = None) -> str:
    """The distribution that installs `import module` (its top-level name) for this Python."""
    top = module.split(".")[0]
    if top == "decord":  # decord has no macOS arm64 wheel; eva-decord stops at CPython 3.11
        return "eva-decord" if (python or sys.version_info[:2]) < (3, 12) else "decord2"
    if top in DISTRIBUTIONS:
        return DISTRIBUTIONS[top]
    try:
        from importlib.metadata import packages_distributions

        installed = packages_distributions().get(top)
    except ImportError:  # Python < 3.10
        installed = None
    return installed[0] if installed else top


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_for(distribution: str, tree: Path) -> str:
    """The tree's own pin for a distribution (requirements.txt, marker dropped), else the bare name."""
    requirements = tree / "requirements.txt"
    lines = requirements.read_text(errors="replace").splitlines() if requirements.exists() else []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0]
        if name and _canonical(name) == _canonical(distribution):
            return line.split(";", 1)[0].strip()
    return distribution


def missing_modules(modules: list[str]) -> list[str]:
    """Those of `modules` (top-level import names) that this interpreter cannot import."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def lacking(tree: Path, modules: list[str]) -> list[dict[str, str]]:
    """What this interpreter lacks of `modules`: each module, its distribution and the tree's pin."""
    rows = []
    for module in missing_modules(modules):
        distribution = distribution_for(module)
        requirement = requirement_for(distribution, tree)
        rows.append({"module": module, "distribution": distribution, "requirement": requirement})
    return rows


if __name__ == "__main__":  # `python distributions.py TREE MODULE...`: lacking(), as JSON
    import json

    print(json.dumps(lacking(Path(sys.argv[1]), sys.argv[2:])))
