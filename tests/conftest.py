from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from latentsync_mps.resources import patches_dir
from latentsync_mps.ruleset import load

FIXTURES = Path(__file__).parent / "fixtures"
# scripts/test.sh installs every extra: there, a test skipped for a missing one is a failure.
REQUIRE_EXTRAS = os.environ.get("LSYNC_PORT_REQUIRE_EXTRAS") == "1"
_MISSING_EXTRAS: list[str] = []


def _skipped_for_an_extra(report) -> bool:
    text = str(report.longrepr)
    return report.skipped and any(word in text for word in ("extra", "could not import", "pyyaml"))


def pytest_collectreport(report):
    if REQUIRE_EXTRAS and _skipped_for_an_extra(report):
        _MISSING_EXTRAS.append(f"{report.nodeid}: {report.longrepr}")


def pytest_runtest_logreport(report):
    if REQUIRE_EXTRAS and _skipped_for_an_extra(report):
        _MISSING_EXTRAS.append(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    if _MISSING_EXTRAS:
        print("\nTests skipped for a missing extra although LSYNC_PORT_REQUIRE_EXTRAS=1:")
        print("\n".join(_MISSING_EXTRAS))
        session.exitstatus = 1


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
