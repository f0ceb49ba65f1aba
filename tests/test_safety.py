"""Bad and unusual input: every case ends with a clear message, the documented exit code and no lost byte.

The CLI runs as a subprocess (its real entry point, `main()`), so a traceback would show on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import FIXTURES, tree_hashes

from latentsync_mps.cli.exits import Exit
from latentsync_mps.port.manifest import STATE_DIR
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.transaction import commit

BOM = b"\xef\xbb\xbf"
# A wide terminal, so that rich never folds a long path in a message over two lines.
ENV = {k: v for k, v in os.environ.items() if k != "LSYNC_PORT_DEBUG"} | {"COLUMNS": "400", "NO_COLOR": "1"}


def cli(*args: object, timeout: float = 60, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`lsync-port ARGS` as its own process; `prefix` runs it under a command (see obeys_permission_bits)."""
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "latentsync_mps.cli", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        env=ENV,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """tree_hashes plus each entry's mode: what a dry run must leave exactly as it was."""
    return {rel: (digest, (root / rel).lstat().st_mode) for rel, digest in tree_hashes(root).items()}


def content(root: Path) -> dict[str, str]:
    """The tree's files without lsync-port's own state folder."""
    return {rel: h for rel, h in tree_hashes(root).items() if not rel.startswith(f"{STATE_DIR}/")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dry_run_writes_nothing(
    tree: Path, expected_code: int = Exit.OK, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    before = snapshot(tree)
    had_state = (tree / STATE_DIR).exists()
    result = cli("apply", tree, "--dry-run", prefix=prefix)
    assert result.returncode == expected_code, result.stdout + result.stderr
    assert snapshot(tree) == before
    assert (tree / STATE_DIR).exists() == had_state
    return result


def apply_json(tree: Path, expected_code: int = Exit.OK, prefix: tuple[str, ...] = ()) -> dict:
    result = cli("apply", tree, "--json", prefix=prefix)
    assert result.returncode == expected_code, result.stdout + result.stderr
    return json.loads(result.stdout)


def revert_exactly(tree: Path, pristine: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
    result = cli("revert", tree, prefix=prefix)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert tree_hashes(tree) == pristine
    assert not (tree / STATE_DIR).exists()


# Root ignores permission bits (CAP_DAC_OVERRIDE), and CI runs as root. The cases that need the
# bits to mean something run lsync-port under setpriv with that capability (and its read-only
# twin) dropped from the bounding set: for root, a child then obeys the bits like anyone else.
DROP_DAC_OVERRIDE = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
    "--",
)


def _bits_obeyed(prefix: tuple[str, ...]) -> bool:
    """Does a child started under `prefix` get EACCES writing into a 0555 folder?"""
    with tempfile.TemporaryDirectory() as folder:
        locked = Path(folder) / "locked"
        locked.mkdir(mode=0o555)
        code = "import sys\ntry:\n    open(sys.argv[1], 'wb')\nexcept PermissionError:\n    sys.exit(13)\n"
        try:
            done = subprocess.run([*prefix, sys.executable, "-c", code, str(locked / "probe")], capture_output=True)
        except OSError:  # no setpriv here
            return False
        finally:
            locked.chmod(0o755)
        return done.returncode == 13


@pytest.fixture(scope="session")
def obeys_permission_bits() -> tuple[str, ...]:
    """The command prefix under which lsync-port obeys permission bits: none for an ordinary
    user; setpriv for root. Skipped (a failure under LSYNC_PORT_REQUIRE_EXTRAS) when neither works."""
    for prefix in ((), DROP_DAC_OVERRIDE):
        if _bits_obeyed(prefix):
            return prefix
    pytest.skip(
        f"running as uid {os.geteuid()} with CAP_DAC_OVERRIDE, which could not be dropped "
        "(no setpriv, or no CAP_SETPCAP): permission bits mean nothing here"
    )


@pytest.fixture(scope="module")
def patched(tmp_path_factory, pack) -> dict[str, str]:
    """The fixture as a complete apply leaves it (without the state folder)."""
    tree = tmp_path_factory.mktemp("reference") / "latentsync"
    shutil.copytree(FIXTURES / "latentsync", tree)
    commit(make_plan(tree, pack))
    return content(tree)


# ---------------------------------------------------------------------------------------------
# Paths that are no upstream tree


@pytest.mark.parametrize("command", [["apply"], ["apply", "--dry-run"], ["status"], ["revert"]])
def test_missing_path_is_a_usage_error(tmp_path, command):
    missing = tmp_path / "no-such-checkout"
    result = cli(*command, missing)
    assert result.returncode == Exit.USAGE
    assert "no such directory" in result.stderr and str(missing) in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["apply"], ["apply", "--dry-run"], ["status"], ["revert"]])
def test_a_file_instead_of_a_directory_is_a_usage_error(fixture_tree, command):
    target = fixture_tree / "predict.py"
    before = snapshot(fixture_tree)
    result = cli(*command, target)
    assert result.returncode == Exit.USAGE
    assert "not a directory" in result.stderr and str(target) in result.stderr
    assert snapshot(fixture_tree) == before


def test_an_empty_directory_is_not_an_upstream_tree(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dry_run_writes_nothing(empty, Exit.NOT_UPSTREAM)
    result = cli("apply", empty)
    assert result.returncode == Exit.NOT_UPSTREAM
    assert "not a recognised upstream tree" in result.stderr
    assert list(empty.iterdir()) == [], "nothing written, no .lsync-port created"
    assert cli("revert", empty).returncode == Exit.NOT_PATCHED
    assert list(empty.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Line endings and encodings


def test_crlf_line_endings_are_kept(fixture_tree):
    # Every language apply rewrites: Python, requirement files and shell scripts.
    sources = [*fixture_tree.rglob("*.py"), fixture_tree / "requirements.txt", *fixture_tree.rglob("*.sh")]
    for path in sources:
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree)

    report = apply_json(fixture_tree)
    after = tree_hashes(fixture_tree)
    changed = [rel for rel, digest in pristine.items() if after[rel] != digest]
    assert {f["path"] for f in report["files"] if not f["created"]} == set(changed)
    assert "requirements.txt" in changed and "scripts/inference.py" in changed and "inference.sh" in changed
    for rel in changed:
        data = (fixture_tree / rel).read_bytes()
        assert b"\r\n" in data, rel
        assert data.count(b"\n") == data.count(b"\r\n"), f"{rel} has a bare \\n"
        assert b"\r\r" not in data, rel
    revert_exactly(fixture_tree, pristine)


def test_utf8_bom_is_kept(fixture_tree):
    for rel in ("scripts/inference.py", "requirements.txt"):
        path = fixture_tree / rel
        path.write_bytes(BOM + path.read_bytes())
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree)

    apply_json(fixture_tree)
    for rel in ("scripts/inference.py", "requirements.txt"):
        data = (fixture_tree / rel).read_bytes()
        assert tree_hashes(fixture_tree)[rel] != pristine[rel], f"{rel} was not rewritten"
        assert data.startswith(BOM) and not data[len(BOM) :].startswith(BOM), rel
        assert BOM not in data[len(BOM) :], rel
    inference = (fixture_tree / "scripts/inference.py").read_bytes()
    compile(inference, "inference.py", "exec")
    assert b'"cuda"' not in inference
    assert b"onnxruntime-gpu" not in (fixture_tree / "requirements.txt").read_bytes()
    revert_exactly(fixture_tree, pristine)


def test_latin1_file_with_a_coding_declaration_stays_latin1(fixture_tree):
    path = fixture_tree / "latentsync/utils/image_processor.py"
    header = "# -*- coding: latin-1 -*-\n# Gérard's café, © naïve\n".encode("latin-1")
    path.write_bytes(header + path.read_bytes())
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree)

    report = apply_json(fixture_tree)
    assert "latentsync/utils/image_processor.py" in {f["path"] for f in report["files"]}
    data = path.read_bytes()
    assert data.startswith(header), "the latin-1 bytes must stay latin-1"
    assert "café".encode() not in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert "_lsync_port" in data.decode("latin-1")
    compile(data, str(path), "exec")
    revert_exactly(fixture_tree, pristine)


# ---------------------------------------------------------------------------------------------
# Files that cannot be processed


def test_a_file_with_a_syntax_error_is_reported_and_left_alone(fixture_tree, patched):
    broken = fixture_tree / "latentsync/utils/broken.py"
    broken.write_bytes(b'import torch\n\ndef broken(:\n    return torch.zeros(1).to("cuda")\n\nDEVICE = "cuda"\n')
    pristine = tree_hashes(fixture_tree)
    result = dry_run_writes_nothing(fixture_tree, Exit.PARTIAL)
    assert "latentsync/utils/broken.py" in result.stdout

    result = cli("apply", fixture_tree)
    assert result.returncode == Exit.PARTIAL
    out = result.stdout + result.stderr
    assert "latentsync/utils/broken.py" in out and "cannot be parsed" in out
    assert tree_hashes(fixture_tree)["latentsync/utils/broken.py"] == pristine["latentsync/utils/broken.py"]
    rest = {rel: h for rel, h in content(fixture_tree).items() if rel != "latentsync/utils/broken.py"}
    assert rest == patched, "the rest of the tree is applied in full"
    revert_exactly(fixture_tree, pristine)


def test_symlinks_leading_out_of_the_tree_are_never_written(fixture_tree, patched, tmp_path):
    outside = tmp_path / "outside"
    (outside / "pkg").mkdir(parents=True)
    (outside / "evil.py").write_text('import torch\nx = torch.zeros(1)\nx.to("cuda")\n')
    (outside / "pkg/mod.py").write_text('import torch\nx = torch.zeros(1)\nx.to("cuda")\n')
    outside_before = tree_hashes(outside)
    (fixture_tree / "latentsync/linked.py").symlink_to(outside / "evil.py")
    (fixture_tree / "outpkg").symlink_to(outside / "pkg", target_is_directory=True)
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree, Exit.PARTIAL)
    assert tree_hashes(outside) == outside_before

    report = apply_json(fixture_tree, Exit.PARTIAL)
    problems = {p["path"]: p["reason"] for p in report["problems"]}
    assert "symbolic link" in problems.pop("latentsync/linked.py")
    assert problems == {}
    mentioned = json.dumps(report)
    assert "outpkg" not in mentioned, "a symlinked folder is not descended"
    assert tree_hashes(outside) == outside_before
    assert (fixture_tree / "latentsync/linked.py").is_symlink() and (fixture_tree / "outpkg").is_symlink()
    rest = {rel: h for rel, h in content(fixture_tree).items() if rel not in ("latentsync/linked.py", "outpkg")}
    assert rest == patched

    revert_exactly(fixture_tree, pristine)
    assert tree_hashes(outside) == outside_before


def test_a_symlink_loop_neither_hangs_nor_crashes(fixture_tree, patched):
    (fixture_tree / "a").symlink_to("b")
    (fixture_tree / "b").symlink_to("a")
    (fixture_tree / "loop_a.py").symlink_to("loop_b.py")
    (fixture_tree / "loop_b.py").symlink_to("loop_a.py")
    (fixture_tree / "latentsync/spin").symlink_to("spin", target_is_directory=True)
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree, Exit.PARTIAL)

    result = cli("apply", fixture_tree, timeout=30)
    assert result.returncode == Exit.PARTIAL
    assert "loop_a.py" in result.stdout and "loop_b.py" in result.stdout
    links = {"a", "b", "loop_a.py", "loop_b.py", "latentsync/spin"}
    after = tree_hashes(fixture_tree)
    assert {rel: after[rel] for rel in links} == {rel: pristine[rel] for rel in links}
    assert {rel: h for rel, h in content(fixture_tree).items() if rel not in links} == patched
    assert cli("status", fixture_tree, timeout=30).returncode == Exit.OK
    revert_exactly(fixture_tree, pristine)


# ---------------------------------------------------------------------------------------------
# File modes and permissions


def test_an_executable_script_keeps_its_mode(fixture_tree):
    script = fixture_tree / "scripts/inference.py"
    script.chmod(0o755)
    pristine = tree_hashes(fixture_tree)
    dry_run_writes_nothing(fixture_tree)

    apply_json(fixture_tree)
    assert tree_hashes(fixture_tree)["scripts/inference.py"] != pristine["scripts/inference.py"]
    assert mode(script) == 0o755
    assert mode(fixture_tree / "predict.py") == 0o644
    revert_exactly(fixture_tree, pristine)
    assert mode(script) == 0o755


def test_a_read_only_file_is_replaced_atomically_and_keeps_its_mode(fixture_tree, patched, obeys_permission_bits):
    # The engine never opens the file itself for writing: it writes a temp file in the (writable)
    # folder and renames it over the file, so a 0444 file is ported although it cannot be opened
    # for writing (lsync-port runs where the bits are obeyed, for root too).
    unet = fixture_tree / "latentsync/models/unet.py"
    unet.chmod(0o444)
    pristine = tree_hashes(fixture_tree)
    as_user = obeys_permission_bits
    try:
        dry_run_writes_nothing(fixture_tree, prefix=as_user)
        apply_json(fixture_tree, prefix=as_user)
        # Patched bytes, and the file's own mode (the reference was ported at 0644).
        rel = "latentsync/models/unet.py"
        assert content(fixture_tree) == patched | {rel: patched[rel].replace("0o644 ", "0o444 ", 1)}
        assert patched[rel].split()[1] != pristine[rel].split()[1], "it was rewritten"
        assert mode(unet) == 0o444
        revert_exactly(fixture_tree, pristine, prefix=as_user)
        assert mode(unet) == 0o444
    finally:
        unet.chmod(0o644)


def test_a_read_only_folder_stops_apply_before_any_change(fixture_tree, patched, obeys_permission_bits):
    models = fixture_tree / "latentsync/models"
    pristine = tree_hashes(fixture_tree)
    as_user = obeys_permission_bits
    models.chmod(0o555)
    try:
        dry_run_writes_nothing(fixture_tree, prefix=as_user)
        result = cli("apply", fixture_tree, prefix=as_user)
        assert result.returncode == Exit.USAGE
        assert "permission denied" in result.stderr
        assert "latentsync/models/" in result.stderr
        assert ".lsync-tmp" not in result.stderr, "the message names the file, not a temp file"
        now = content(fixture_tree)
        assert set(now) <= set(patched)
        for rel, digest in now.items():
            assert digest in (pristine.get(rel), patched[rel]), f"{rel} is neither original nor fully patched"
        assert now["latentsync/models/unet.py"] == pristine["latentsync/models/unet.py"]
        assert now["latentsync/models/resnet.py"] == pristine["latentsync/models/resnet.py"]
        assert not list(fixture_tree.rglob("*.lsync-tmp"))
        status = cli("status", fixture_tree, "--json", prefix=as_user)
        assert status.returncode == Exit.OK
        # Every temp file, backup and the manifest is staged before the tree changes, so a folder
        # that refuses a temp file stops apply before any file was replaced.
        assert "Nothing was changed" in result.stderr
        assert now == {rel: digest for rel, digest in pristine.items() if rel in now}
        assert json.loads(status.stdout)["summary"].startswith("not patched")
    finally:
        models.chmod(0o755)
    # Nothing to recover: once the folder is writable again, apply and revert work as on any tree.
    apply_json(fixture_tree)
    revert_exactly(fixture_tree, pristine)


# ---------------------------------------------------------------------------------------------
# A manifest that cannot be trusted


def _corrupt(manifest: Path) -> None:
    manifest.write_text("{not json")


def _escape(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    data["files"]["../../etc/passwd"] = data["files"]["predict.py"]
    manifest.write_text(json.dumps(data))


def _escape_to_decoy(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    data["files"]["../decoy.py"] = data["files"]["predict.py"]
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", [_corrupt, _escape, _escape_to_decoy], ids=["not-json", "etc-passwd", "decoy"])
def test_an_untrustworthy_manifest_is_refused_by_every_command(fixture_tree, tmp_path, damage):
    decoy = tmp_path / "decoy.py"  # what "../decoy.py" points at from the tree
    decoy.write_text('DEVICE = "cuda"\n')
    assert cli("apply", fixture_tree).returncode == Exit.OK
    manifest = fixture_tree / STATE_DIR / "manifest.json"
    damage(manifest)
    before = snapshot(fixture_tree)
    decoy_before = decoy.read_bytes()
    passwd_before = Path("/etc/passwd").read_bytes()

    for command in (
        ["apply"],
        ["apply", "--dry-run"],
        ["status"],
        ["status", "--json"],
        ["revert"],
        ["revert", "--force"],
    ):
        result = cli(*command, fixture_tree)
        assert result.returncode == Exit.MANIFEST, (command, result.stdout, result.stderr)
        assert str(manifest) in result.stderr, command
        assert snapshot(fixture_tree) == before, command
    assert decoy.read_bytes() == decoy_before
    assert Path("/etc/passwd").read_bytes() == passwd_before


def test_revert_never_writes_through_a_symlinked_folder_named_in_the_manifest(fixture_tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mod.py").write_text("# not ours\n")
    (fixture_tree / "outpkg").symlink_to(outside, target_is_directory=True)
    assert cli("apply", str(fixture_tree)).returncode == 0
    manifest_path = fixture_tree / ".lsync-port" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["outpkg/mod.py"] = {"original": "0" * 64, "patched": ["1" * 64], "rules": []}
    manifest_path.write_text(json.dumps(manifest))
    result = cli("revert", str(fixture_tree), "--force")
    assert result.returncode == 7
    assert "outpkg/mod.py" in result.stderr and "symbolic link" in result.stderr
    assert (outside / "mod.py").read_text() == "# not ours\n"


def test_revert_never_replaces_a_managed_file_that_became_a_symlink(fixture_tree):
    """A managed file replaced by a link (here to a file of the tree that apply does not manage):
    revert --force refuses it and leaves both the link and what it points at as they are."""
    assert cli("apply", str(fixture_tree)).returncode == 0
    (fixture_tree / "notes.txt").write_text("mine\n")
    script = fixture_tree / "predict.py"
    script.unlink()
    script.symlink_to("notes.txt")
    result = cli("revert", str(fixture_tree), "--force")
    assert result.returncode == 7
    assert "predict.py" in result.stderr and "symbolic link" in result.stderr
    assert script.is_symlink() and os.readlink(script) == "notes.txt"
    assert (fixture_tree / "notes.txt").read_text() == "mine\n"


def test_a_file_nested_deeper_than_the_recursion_limit_is_reported_and_left_alone(fixture_tree):
    # Generated code (sympy ships such tables) can nest deeper than libcst's recursive walk allows.
    deep = fixture_tree / "latentsync" / "models" / "generated.py"
    deep.write_text('x = torch.device("cuda")\ntable = ' + "[" * 2000 + "]" * 2000 + "\n")
    before = deep.read_bytes()
    result = cli("apply", fixture_tree)
    assert result.returncode == 5
    assert "latentsync/models/generated.py" in result.stdout + result.stderr
    assert deep.read_bytes() == before
    assert "_lsync_port" in (fixture_tree / "scripts" / "inference.py").read_text()  # the rest is ported
    assert cli("scan", fixture_tree).returncode in (0, 6)
