"""The suite caches in a folder of its own, never in the user's ~/.cache (issue 24, item 7: a run
wrote about 680 MB of synthetic weights into the real ~/.cache/lsync-port). tests/conftest.py
points XDG_CACHE_HOME at one folder per run before any test; these tests fail when it does not,
or when a place lsync-port caches in, or a child process a test starts, would not follow it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TEST_CACHE, USER_CACHE_ENV


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def user_cache() -> Path:
    """The cache the user had before the suite started (recorded by conftest)."""
    return Path(os.environ[USER_CACHE_ENV])


def test_the_suite_has_a_cache_folder_of_its_own():
    assert os.environ.get("XDG_CACHE_HOME") == str(TEST_CACHE)
    assert TEST_CACHE.is_dir()
    assert not _inside(TEST_CACHE, user_cache()), f"{TEST_CACHE} is inside the user's cache {user_cache()}"
    assert not _inside(TEST_CACHE, Path.home() / ".cache")


def test_every_cache_lsync_port_writes_is_in_the_suites_folder():
    from latentsync_mps.features.verify.runner import _cache_dir

    # verify's synthetic weights, and beside them (harness.py) the parity references and the MPS support table.
    own = _cache_dir().parent
    assert own.name == "lsync-port"
    for place in (own, _cache_dir(), own / "verify-reference", own / "mps-support"):
        assert _inside(place, TEST_CACHE), f"{place} is not in the suite's cache {TEST_CACHE}"
        assert not _inside(place, user_cache()), f"{place} is in the user's cache"


def test_a_child_process_a_test_starts_caches_there_too():
    """verify and forecast run the tree in a child process, which reads the environment it inherits."""
    code = "from latentsync_mps.features.verify.runner import _cache_dir; print(_cache_dir())"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert _inside(Path(printed), TEST_CACHE)
