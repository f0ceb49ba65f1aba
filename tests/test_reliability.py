"""apply and revert under concurrency, kills and failing disks (issue 13, part 5).

- one apply or revert at a time per tree (`.lsync-port/lock`): a second process waits, then names
  the holder; the lock of a killed process is taken over;
- the parse workers of apply die with it;
- a full disk, a permission problem or a read-only file system gives one plain line, and the tree
  is left exactly as it was (or, on a tree already patched, exactly as patched).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, tree_hashes
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.cli.exits import Exit
from latentsync_mps.port import manifest, transaction
from latentsync_mps.port.errors import WriteFailed
from latentsync_mps.port.manifest import LOCK, STATE_DIR, TreeLock
from latentsync_mps.port.planning import make_plan

ENV = {k: v for k, v in os.environ.items() if k != "LSYNC_PORT_DEBUG"} | {"COLUMNS": "400"}
HOLD = """
import sys, time
from pathlib import Path
from latentsync_mps.port.manifest import TreeLock
lock = TreeLock(Path(sys.argv[1]), "lsync-port apply (test holder)")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def cli(*args: object, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "latentsync_mps.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV | (env or {}),
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err and "internal error" not in err, err
    return process.returncode, out, err


def holder(tree: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tree)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def pristine_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    return tree


def without_lock(hashes: dict[str, str]) -> dict[str, str]:
    """A killed holder leaves its lock file (the kernel drops only the lock): compare the rest."""
    return {rel: digest for rel, digest in hashes.items() if rel != f"{STATE_DIR}/{LOCK}"}


def leftovers(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*.lsync-tmp"))


# ---------------------------------------------------------------------------------------------
# The lock


def test_a_second_apply_waits_then_names_who_holds_the_lock(tmp_path):
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    other = holder(tree)
    try:
        started = time.monotonic()
        code, _, err = finish(cli("apply", tree, env={transaction.LOCK_WAIT_ENV: "0.5"}))
        waited = time.monotonic() - started
    finally:
        other.kill()
        other.wait()
    assert code == Exit.LOCKED, err
    assert waited >= 0.5, "it gave up without waiting"
    assert (tree / STATE_DIR / LOCK).exists(), "the killed holder's lock file stays (stale, taken over later)"
    message = " ".join(err.split())
    for part in (f"pid {other.pid}", socket.gethostname(), "lsync-port apply (test holder)", "since"):
        assert part in message, (part, err)
    assert without_lock(tree_hashes(tree)) == before
    assert not (tree / STATE_DIR / "manifest.json").exists()


def test_revert_takes_the_same_lock(tmp_path, pack):
    tree = pristine_tree(tmp_path)
    transaction.commit(make_plan(tree, pack))
    patched = tree_hashes(tree)
    other = holder(tree)
    try:
        code, _, err = finish(cli("revert", tree, env={transaction.LOCK_WAIT_ENV: "0.2"}))
    finally:
        other.kill()
        other.wait()
    assert code == Exit.LOCKED and f"pid {other.pid}" in err
    assert without_lock(tree_hashes(tree)) == patched


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    dead = holder(tree)
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    left = json.loads((tree / STATE_DIR / LOCK).read_text())
    assert left["pid"] == dead.pid, "the killed holder left its lock file behind"
    code, _, err = finish(cli("apply", tree, env={transaction.LOCK_WAIT_ENV: "0"}))
    assert code == Exit.OK, err
    assert "took over the lock" in err and f"pid {dead.pid}" in err
    assert not (tree / STATE_DIR / LOCK).exists(), "released after apply"
    code, _, err = finish(cli("revert", tree))
    assert code == Exit.OK, err
    assert tree_hashes(tree) == before
    assert not (tree / STATE_DIR).exists(), "a reverted tree has no state folder, lock included"


def test_a_taken_over_lock_file_names_only_its_new_holder(tmp_path):
    """The lock file a killed process left is rewritten whole: its old, longer contents must not
    trail after the new holder's JSON (a waiting process reads the file to say who holds the lock)."""
    tree = pristine_tree(tmp_path)
    (tree / STATE_DIR).mkdir()
    dead = {"pid": 999999, "host": "elsewhere", "command": "lsync-port apply " + "x" * 300, "since": 1, "python": "?"}
    (tree / STATE_DIR / LOCK).write_text(json.dumps(dead))
    lock = TreeLock(tree, "lsync-port revert", wait=0)
    lock.acquire()
    try:
        assert lock.stale == dead
        holder = json.loads((tree / STATE_DIR / LOCK).read_text())
        assert (holder["pid"], holder["command"]) == (os.getpid(), "lsync-port revert")
        assert holder["host"] == socket.gethostname() and holder["python"] == sys.executable
        with pytest.raises(manifest.TreeLocked, match=f"pid {os.getpid()}"):
            TreeLock(tree, "lsync-port apply", wait=0).acquire()
    finally:
        lock.release()


def test_two_applies_at_once_give_one_complete_port_that_reverts(tmp_path, pack):
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    runs = [cli("apply", tree, "--json", env={transaction.LOCK_WAIT_ENV: "120"}) for _ in range(2)]
    results = [finish(run) for run in runs]
    assert [code for code, _, _ in results] == [Exit.OK, Exit.OK], [err for _, _, err in results]
    written = sorted(json.loads(out)["written"] for _, out, _ in results)
    assert written == [False, True], "one wrote the port, the other found it done"
    recorded = manifest.State(tree).read()
    assert recorded is not None and pack.profiles["latentsync"].runtime_path in recorded.files
    code, _, err = finish(cli("revert", tree))
    assert code == Exit.OK, err
    assert tree_hashes(tree) == before
    assert not (tree / STATE_DIR).exists()


def test_a_lock_released_while_waited_for_is_not_shared(tmp_path):
    """The holder unlinks the lock file as it lets go: a waiter that had opened the old file must
    not count a lock on it as the lock (two holders at once)."""
    tree = pristine_tree(tmp_path)
    first = TreeLock(tree, "first", wait=0)
    first.acquire()
    second = TreeLock(tree, "second", wait=2)
    fd = os.open(first.path, os.O_RDWR)  # what a waiter holds while it retries
    try:
        first.release()
        second.acquire()
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old, unlinked file: lockable, but no lock
        assert os.fstat(fd).st_ino != os.stat(second.path).st_ino
        with pytest.raises(manifest.TreeLocked):
            TreeLock(tree, "third", wait=0).acquire()
    finally:
        os.close(fd)
        second.release()


# ---------------------------------------------------------------------------------------------
# Workers die with their parent


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has died; only its exit status is left


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc (Linux)")
def test_apply_workers_die_when_apply_is_killed(tmp_path):
    tree = pristine_tree(tmp_path)
    for index in range(30):  # enough files for the process pool, and for a few seconds of parsing
        shutil.copytree(FIXTURES / "latentsync" / "latentsync", tree / "latentsync" / "models" / f"copy{index}")
    parent = cli("apply", tree)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and parent.poll() is None:
        workers = {c for c in _children(parent.pid) if _alive(c)}
        if workers:
            break
        time.sleep(0.01)
    if not workers:
        parent.kill()
        parent.communicate()
        pytest.fail("apply finished or timed out before its workers were seen")
    time.sleep(0.2)  # the initializer has run (the workers were forked at least 0.2 s ago)
    parent.send_signal(signal.SIGKILL)
    parent.communicate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    survivors = [w for w in workers if _alive(w)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived the killed apply"


# ---------------------------------------------------------------------------------------------
# Full disk, permissions, read-only file system

ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EACCES: ("permission denied", "writable"),
    errno.EROFS: ("read-only file system", "somewhere writable"),
}


def failing_after(function, calls: int, code: int):
    """`function`, except that call number `calls` (from 0) raises OSError(code)."""
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(code, os.strerror(code), str(args[0]))
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("code", list(ERRORS))
@pytest.mark.parametrize("where", ["tree file", "backup", "manifest"])
def test_a_failed_write_during_apply_changes_nothing(tmp_path, pack, monkeypatch, code, where):
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    plan = make_plan(tree, pack)
    if where == "tree file":  # the third file of the tree to be staged
        monkeypatch.setattr(transaction, "stage", failing_after(manifest.stage, 2, code))
    elif where == "backup":  # the second backup
        monkeypatch.setattr(manifest.State, "save_backup", failing_after(manifest.State.save_backup, 1, code))
    else:  # the first manifest write, after every backup was saved
        monkeypatch.setattr(manifest.State, "write", failing_after(manifest.State.write, 0, code))
    with pytest.raises(WriteFailed) as failure:
        transaction.commit(plan)
    message = str(failure.value)
    what, todo = ERRORS[code]
    assert what in message and "Nothing was changed" in message and todo in message, message
    assert "\n" not in message
    assert not failure.value.changed
    assert tree_hashes(tree) == before, "every file is as it was"
    assert not (tree / STATE_DIR).exists(), "no state folder, no backups left behind"
    assert leftovers(tree) == []


@pytest.mark.parametrize("code", list(ERRORS))
def test_a_failed_write_on_a_patched_tree_keeps_it_fully_patched(tmp_path, pack, monkeypatch, code):
    tree = pristine_tree(tmp_path)
    pristine = tree_hashes(tree)
    transaction.commit(make_plan(tree, pack, rule_ids=["device-literal"]))
    partial = tree_hashes(tree)
    state_before = (tree / STATE_DIR / "manifest.json").read_bytes()
    plan = make_plan(tree, pack)  # every rule now: more files change
    monkeypatch.setattr(transaction, "stage", failing_after(manifest.stage, 1, code))
    with pytest.raises(WriteFailed):
        transaction.commit(plan)
    assert tree_hashes(tree) == partial
    assert (tree / STATE_DIR / "manifest.json").read_bytes() == state_before
    assert leftovers(tree) == []
    monkeypatch.undo()
    assert transaction.revert(tree).refused == []
    assert tree_hashes(tree) == pristine


@pytest.mark.parametrize("code", list(ERRORS))
def test_a_failed_write_during_revert_leaves_the_port(tmp_path, pack, monkeypatch, code):
    tree = pristine_tree(tmp_path)
    pristine = tree_hashes(tree)
    transaction.commit(make_plan(tree, pack))
    patched = tree_hashes(tree)
    monkeypatch.setattr(transaction, "stage", failing_after(manifest.stage, 2, code))
    with pytest.raises(WriteFailed) as failure:
        transaction.revert(tree)
    assert "revert" in str(failure.value) and "Nothing was changed" in str(failure.value)
    assert tree_hashes(tree) == patched
    assert leftovers(tree) == []
    monkeypatch.undo()
    transaction.revert(tree)
    assert tree_hashes(tree) == pristine


@pytest.mark.parametrize("code", list(ERRORS))
def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, code):
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    monkeypatch.setattr(transaction, "stage", failing_after(manifest.stage, 0, code))
    result = CliRunner().invoke(app, ["apply", str(tree)])
    assert result.exit_code == Exit.USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    what, todo = ERRORS[code]
    assert what in lines[0] and "Nothing was changed" in lines[0] and todo in lines[0]
    assert "internal error" not in result.stderr and "bug" not in result.stderr
    assert tree_hashes(tree) == before and not (tree / STATE_DIR).exists()


INJECT = """
import errno, os, sys
from latentsync_mps.port import manifest, transaction
real, code = manifest.stage, int(sys.argv[1])
def stage(path, *args, **kwargs):
    if path.name == "unet.py":
        raise OSError(code, os.strerror(code), str(path))
    return real(path, *args, **kwargs)
transaction.stage = stage
from latentsync_mps.cli import main
sys.argv = ["lsync-port", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("code", [errno.ENOSPC])  # one real process (each costs an interpreter start); the
def test_the_console_command_says_it_in_one_line(tmp_path, code):  # other errors: test_the_cli_says_it
    tree = pristine_tree(tmp_path)
    before = tree_hashes(tree)
    run = subprocess.run(
        [sys.executable, "-c", INJECT, str(code), "apply", str(tree)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert run.returncode == Exit.USAGE, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    what, todo = ERRORS[code]
    assert what in lines[0] and "Nothing was changed" in lines[0] and todo in lines[0]
    assert "latentsync/models/unet.py" in lines[0]
    assert tree_hashes(tree) == before and not (tree / STATE_DIR).exists()
