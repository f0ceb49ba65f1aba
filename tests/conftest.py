from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from latentsync_mps.resources import patches_dir
from latentsync_mps.ruleset import load

FIXTURES = Path(__file__).parent / "fixtures"


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target text) and its sha256: the tree's identity."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def pack():
    return load(patches_dir())


@pytest.fixture
def fixture_tree(tmp_path: Path) -> Path:
    """A fresh copy of the LatentSync-shaped fixture."""
    target = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", target)
    return target
