from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.rulepack import load

FIXTURES = Path(__file__).parent / "fixtures"
# pytest-xdist's workers start with COLUMNS=80, and rich fixes a console's width from COLUMNS when the
# console is made (lsync-port's, at import): a test that asks for another width through the
# environment would get 80 in a worker and its own width with -n 0. Without it, rich reads the width
# when it prints (80 where there is no terminal), as in a user's process.
os.environ.pop("COLUMNS", None)

# The suite's own cache folder, never the user's: verify keeps synthetic weights (about 680 MB over a
# whole run), parity references and the MPS support table under $XDG_CACHE_HOME/lsync-port
# (default ~/.cache), and Hugging Face and torch hub default to $XDG_CACHE_HOME too. Set when this
# file is imported, before any test, in the controller and in each xdist worker: the workers inherit
# the controller's folder through the environment (one folder per run, the weights built once), and
# the process that made the folder deletes it at the end. LSYNC_PORT_TEST_CACHE names a folder to
# keep between runs instead (faster reruns; never deleted).
TEST_CACHE_ENV = "LSYNC_PORT_TEST_CACHE"
USER_CACHE_ENV = "LSYNC_PORT_TEST_USER_CACHE"  # the user's cache as it was before, for tests/test_test_cache.py
if USER_CACHE_ENV not in os.environ:
    os.environ[USER_CACHE_ENV] = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
_MADE_TEST_CACHE = TEST_CACHE_ENV not in os.environ
if _MADE_TEST_CACHE:
    os.environ[TEST_CACHE_ENV] = tempfile.mkdtemp(prefix="lsync-port-test-cache-")
TEST_CACHE = Path(os.environ[TEST_CACHE_ENV])
os.environ["XDG_CACHE_HOME"] = str(TEST_CACHE)


def pytest_unconfigure(config):
    if _MADE_TEST_CACHE:
        shutil.rmtree(TEST_CACHE, ignore_errors=True)


# verify and doctor resolve the tree's requirements for the modelled Mac on the registry: not in the
# tests, which need no network (tests/test_mac_resolve.py runs it on recorded outputs), unless asked.
if os.environ.get("LSYNC_PORT_REGISTRY") != "1":
    os.environ["LSYNC_PORT_MAC_RESOLVE"] = "off"
# scripts/test.sh installs every extra and the pinned torch, as CI does: there, a test skipped for
# a missing extra, for another torch version, or for a capability it could not drop is a failure.
REQUIRE_EXTRAS = os.environ.get("LSYNC_PORT_REQUIRE_EXTRAS") == "1"
_MISSING_EXTRAS: list[str] = []
# What such a skip's reason says: an extra or a module is missing; "torch 2.13.0" (a version);
# the root-only case of tests/test_safety.py (CAP_DAC_OVERRIDE could not be dropped).
_SET_UP_SKIP = re.compile(r"extra|could not import|pyyaml|torch \d+\.\d+|CAP_DAC_OVERRIDE")


def _skipped_for_the_set_up(report) -> bool:
    return report.skipped and _SET_UP_SKIP.search(str(report.longrepr)) is not None


def pytest_collectreport(report):
    if REQUIRE_EXTRAS and _skipped_for_the_set_up(report):
        _MISSING_EXTRAS.append(f"{report.nodeid}: {report.longrepr}")


def pytest_runtest_logreport(report):
    if REQUIRE_EXTRAS and _skipped_for_the_set_up(report):
        _MISSING_EXTRAS.append(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    if _MISSING_EXTRAS:
        print("\nSkipped for the set-up (an extra, the torch version, root) although LSYNC_PORT_REQUIRE_EXTRAS=1:")
        print("\n".join(_MISSING_EXTRAS))
        session.exitstatus = 1


def real_latentsync_16() -> tuple[Path, str] | None:
    """Opt-in: the LatentSync 1.6-or-later checkout named in LSYNC_UPSTREAM (it has InsightFace's
    face_detector.py) and the interpreter with its stack (LSYNC_UPSTREAM_PYTHON), or None."""
    python = os.environ.get("LSYNC_UPSTREAM_PYTHON") or "/work/venv-ls/bin/python"
    if not Path(python).exists():
        return None
    for entry in os.environ.get("LSYNC_UPSTREAM", "").split(os.pathsep):
        if entry and (Path(entry) / "latentsync/utils/face_detector.py").exists():
            return Path(entry), python
    return None


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target text) and its mode and sha256, as
    "0o644 <sha256>": the tree's identity. The mode is part of it: a revert that lost an
    executable bit did not bring every byte back."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            out[rel] = f"{oct(stat.S_IMODE(path.stat().st_mode))} {hashlib.sha256(path.read_bytes()).hexdigest()}"
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
