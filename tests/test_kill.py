"""SIGKILL during `apply`, at seeded random moments: the tree is never half-written.

After each kill every file is either its pristine bytes or its fully patched bytes, `status` tells
the truth, and `revert` (or a second `apply`) brings the tree to a clean end state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, tree_hashes
from typer.testing import CliRunner, Result

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import Exit
from latentsync_mps.port.manifest import STATE_DIR
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

SEED = 20_240_611
TRIALS = 20
TMP_SUFFIX = ".lsync-tmp"
ENV = {k: v for k, v in os.environ.items() if k != "LSYNC_PORT_DEBUG"} | {"COLUMNS": "400"}

# What the trials saw, to check that the kills did land inside the write phase.
OUTCOMES: dict[int, str] = {}


def lsync(*args: object) -> Result:
    """`lsync-port ARGS` in this process (typer's CliRunner): the same command code as the console
    script without the interpreter start, which would cost more than half a second per call."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    """`lsync-port ARGS` as its own process, through the console entry point."""
    result = subprocess.run(
        [sys.executable, "-m", "latentsync_mps.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result


def content(root: Path) -> dict[str, str]:
    """The tree's files, without the state folder and the temp files an interrupted write left."""
    return {
        rel: digest
        for rel, digest in tree_hashes(root).items()
        if not rel.startswith(f"{STATE_DIR}/") and not rel.endswith(TMP_SUFFIX)
    }


def strays(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{TMP_SUFFIX}"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """One snapshot of the fixture that every trial copies, so all of them start from the same bytes."""
    tree = tmp_path_factory.mktemp("source") / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    return tree


@pytest.fixture(scope="module")
def patched(tmp_path_factory, pack, source) -> dict[str, str]:
    """The fixture as one complete apply leaves it, learnt on a separate copy."""
    tree = tmp_path_factory.mktemp("reference") / "latentsync"
    shutil.copytree(source, tree)
    commit(make_plan(tree, pack))
    return content(tree)


def kill_apply(tree: Path, rng: random.Random, early: bool) -> int | None:
    """Start `apply TREE` and SIGKILL it; the return code, or None when it finished first."""
    delay = rng.uniform(0, 1.0) if early else rng.uniform(0, 0.005)
    process = subprocess.Popen(
        [sys.executable, "-m", "latentsync_mps.cli", "apply", str(tree)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        # Wait for the write phase: everything is staged (temp files, backups) and the manifest
        # written before the first file is swapped in. (The state folder appears earlier, with the lock.)
        if not early:
            while process.poll() is None and not (tree / STATE_DIR / "manifest.json").exists():
                time.sleep(0.0005)
        time.sleep(delay)
        if process.poll() is not None:
            return None
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_during_apply_leaves_every_file_whole(tmp_path, source, patched, trial):
    rng = random.Random(SEED + trial)
    tree = tmp_path / "latentsync"
    shutil.copytree(source, tree)
    pristine = tree_hashes(tree)
    assert set(pristine) <= set(patched)

    code = kill_apply(tree, rng, early=trial % 4 == 3)
    assert code in (None, -signal.SIGKILL)

    # 1. Every file is its pristine bytes or its fully patched bytes, nothing in between.
    now = content(tree)
    for rel in set(pristine) | set(patched) | set(now):
        assert now.get(rel) in (pristine.get(rel), patched.get(rel)), f"{rel} is half-written"
    written = {rel for rel in now.keys() | pristine.keys() if now.get(rel) != pristine.get(rel)}
    manifest_path = tree / STATE_DIR / "manifest.json"
    has_manifest = manifest_path.exists()
    assert has_manifest or not written, "a file changed before the manifest that can undo it existed"

    # 2. status tells the truth.
    result = lsync("status", tree, "--json")
    assert result.exit_code == Exit.OK, result.stderr
    report = json.loads(result.stdout)
    if not has_manifest:
        assert report["summary"] == "not patched"
        OUTCOMES[trial] = "nothing written" if code is not None else "finished"
    else:
        manifest = json.loads(manifest_path.read_text())
        truth = {rel: "patched" if now.get(rel) == patched[rel] else "original" for rel in manifest["files"]}
        assert {f["path"]: f["state"] for f in report["files"]} == truth
        complete = manifest["state"] == "applied" and all(s == "patched" for s in truth.values())
        if complete:
            assert report["summary"] == "patched"
            assert now == patched
        else:
            assert report["summary"].startswith("partially patched")
            assert code is not None, "an apply that ran to its end left the tree partial"
        if code is None:
            OUTCOMES[trial] = "finished"
        else:
            done = sum(s == "patched" for s in truth.values())
            OUTCOMES[trial] = "killed after the last write" if complete else f"killed with {done}/{len(truth)} written"

    # 3. Revert restores the pristine tree exactly, or a second apply finishes the port.
    if trial % 2 == 0:
        result = lsync("revert", tree)
        if has_manifest:
            assert result.exit_code == Exit.OK, result.stdout + result.stderr
            assert tree_hashes(tree) == pristine  # every byte, no stray temp file, no .lsync-port
            assert not (tree / STATE_DIR).exists()
        else:
            assert result.exit_code == Exit.NOT_PATCHED, result.stdout + result.stderr
            assert content(tree) == pristine
            assert [s for s in strays(tree) if not s.startswith(f"{STATE_DIR}/")] == []
    else:
        result = lsync("apply", tree)
        assert result.exit_code == Exit.OK, result.stdout + result.stderr
        assert content(tree) == patched
        assert [s for s in strays(tree) if not s.startswith(f"{STATE_DIR}/")] == []
        assert json.loads(lsync("status", tree, "--json").stdout)["summary"] == "patched"
        # ... and the port it finished still reverts to every pristine byte.
        assert lsync("revert", tree).exit_code == Exit.OK
        assert tree_hashes(tree) == pristine
        assert not (tree / STATE_DIR).exists()


def test_kills_landed_inside_the_write_phase():
    """Runs after the trials: at least one kill must have caught apply with a manifest on disk.
    It judges all the trials, so it fails when fewer ran (some failed, or were not selected:
    select this file whole, e.g. `pytest tests/test_kill.py`)."""
    assert len(OUTCOMES) == TRIALS, f"only {len(OUTCOMES)} of the {TRIALS} kill trials ran to their end"
    print("kill outcomes:", dict(sorted(OUTCOMES.items())))
    assert any(outcome.startswith("killed ") for outcome in OUTCOMES.values()), OUTCOMES


def _plant_strays(tree: Path) -> list[Path]:
    """The temp files a SIGKILL inside atomic_write leaves: next to a tree file, a backup, the manifest."""
    planted = [
        tree / f"latentsync/models/.resnet.py.k1lled{TMP_SUFFIX}",
        tree / f".predict.py.k1lled{TMP_SUFFIX}",
        tree / STATE_DIR / f".manifest.json.k1lled{TMP_SUFFIX}",
        tree / STATE_DIR / f"originals/scripts/.inference.py.k1lled{TMP_SUFFIX}",
    ]
    for path in planted:
        path.write_bytes(b"half a file")
    return planted


def test_apply_and_revert_remove_the_temp_files_a_kill_left(fixture_tree, pack, patched):
    pristine = tree_hashes(fixture_tree)
    commit(make_plan(fixture_tree, pack))
    manifest = fixture_tree / STATE_DIR / "manifest.json"
    data = json.loads(manifest.read_text())
    data["state"] = "applying"  # as a kill between the last file and the final manifest leaves it
    manifest.write_text(json.dumps(data))

    # A following apply finishes the port and removes the strays next to the tree's files ...
    _plant_strays(fixture_tree)
    result = cli("apply", fixture_tree)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert content(fixture_tree) == patched
    assert [s for s in strays(fixture_tree) if not s.startswith(f"{STATE_DIR}/")] == []
    assert json.loads(manifest.read_text())["state"] == "applied"

    # ... and revert removes every one of them, in the state folder too (a killed manifest write).
    _plant_strays(fixture_tree)
    result = cli("revert", fixture_tree)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert tree_hashes(fixture_tree) == pristine
    assert not (fixture_tree / STATE_DIR).exists()
