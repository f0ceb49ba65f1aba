"""Where the packaged data lives: rule packs (`patches/`) and the demo tree.

In a wheel both sit inside the package (see `force-include` in pyproject.toml). In a source
checkout (editable install, tests) they are read from the repository itself.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
_REPO = _PACKAGE.parent.parent

# The folder of a rule pack that holds the detection-only rules (ruleset.py). Here, not in
# ruleset.py, for the no-op re-apply (port/noop.py), which must not import the rule loader.
FINDINGS_DIR = "findings"


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def patches_dir() -> Path:
    """The rule packs: $LSYNC_PORT_PATCHES when set (for maintainers trying new rules), else the
    packaged ones."""
    override = os.environ.get("LSYNC_PORT_PATCHES")
    if override:
        return Path(override)
    return _first_existing(_PACKAGE / "patches", _REPO / "patches")


def bundled_patches_dir() -> Path:
    """The rule packs shipped with lsync-port, whatever $LSYNC_PORT_PATCHES says."""
    return _first_existing(_PACKAGE / "patches", _REPO / "patches")


def example_tree() -> Path:
    """The LatentSync-shaped example that `lsync-port demo` ports (written from scratch)."""
    return _first_existing(_PACKAGE / "examples" / "latentsync", _REPO / "tests" / "fixtures" / "latentsync")


def runtime_helper_source() -> str:
    """Text of the module written into a patched tree (see runtime/_lsync_port.py)."""
    return (_PACKAGE / "payload" / "runtime" / "_lsync_port.py").read_text(encoding="utf-8")
