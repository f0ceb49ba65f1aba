"""Break one behaviour at a time on a copy of the repository and check that the tests notice.

    .venv/bin/python scripts/mutation_check.py            # every mutation below
    .venv/bin/python scripts/mutation_check.py parity ffmpeg-on-path   # some, by name
    .venv/bin/python scripts/mutation_check.py --list

Each mutation replaces one exact snippet of one file (it must occur exactly once: a snippet that
moved is an error, not a pass) in a fresh copy of the working tree, then runs the tests named for
it with this interpreter and PYTHONPATH set to the copy's src/, so that the copy's code is the one
imported (checked before the tests run; the subprocesses the tests start inherit it). A mutation is
"caught" when those tests fail. First the union of all named tests runs once on the unmutated copy:
a test that fails there would catch everything and prove nothing. Not part of CI: it takes a while.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    original: str  # exact text, found exactly once
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: node ids, files, -k expressions


MUTATIONS = [
    # The four the hand check of issue 15 found uncaught.
    Mutation(
        "parity-cannot-fail",
        "src/latentsync_mps/payload/verify/reference.py",
        "    if psnr < spec.min_psnr:",
        "    if False:",
        ("tests/test_parity.py",),
    ),
    Mutation(
        "ffmpeg-always-on-path",
        "src/latentsync_mps/payload/probe.py",
        'facts = {"path": shutil.which("ffmpeg"),',
        'facts = {"path": shutil.which("ffmpeg") or "/usr/bin/ffmpeg",',
        ("tests/test_doctor.py", "-k", "ffmpeg_exactly or reports_honestly"),
    ),
    Mutation(
        "run-pass-rewrites-nothing",
        "src/latentsync_mps/port/rewrite.py",
        "    rewrites = _surviving(log)",
        "    rewrites = []",
        ("tests/test_corpus.py",),
    ),
    Mutation(
        "atomic-write-in-place",
        "src/latentsync_mps/port/manifest.py",
        '        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".lsync-tmp", dir=path.parent)',
        "        fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), str(path)",
        ("tests/test_atomic_write.py",),
    ),
    # Thirteen (and more) that the suite caught already, or now catches: each a real behaviour.
    Mutation(
        "write-without-fsync",
        "src/latentsync_mps/port/manifest.py",
        "            os.fsync(handle.fileno())",
        "            pass",
        ("tests/test_atomic_write.py",),
    ),
    Mutation(
        "replaced-file-mode-lost",
        "src/latentsync_mps/port/manifest.py",
        "        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644",
        "        mode = 0o644",
        ("tests/test_atomic_write.py", "-k", "only_by_one_rename"),  # the engine passes tree files' modes itself
    ),
    Mutation(
        "revert-loses-modes",
        "src/latentsync_mps/port/transaction.py",
        "            staged.append((stage(target, data, mode), target))",
        "            staged.append((stage(target, data, 0o644), target))",
        ("tests/test_engine.py", "-k", "revert_restores_every_byte"),
    ),
    Mutation(
        "permission-error-names-the-temp-file",
        "src/latentsync_mps/port/manifest.py",
        '        raise type(error)(error.errno, f"cannot write in {path.parent}", str(path)) from None',
        "        raise",
        ("tests/test_safety.py", "-k", "read_only_folder"),
    ),
    Mutation(
        "no-backup-of-the-originals",
        "src/latentsync_mps/port/transaction.py",
        "            state.save_backup(f.path, f.pristine)",
        "            pass",
        ("tests/test_engine.py", "-k", "revert_restores_every_byte"),
    ),
    Mutation(
        "temp-files-of-a-kill-kept",
        "src/latentsync_mps/port/transaction.py",
        "            stray.unlink(missing_ok=True)",
        "            pass",
        ("tests/test_kill.py", "-k", "remove_the_temp_files"),
    ),
    Mutation(
        "drift-never-reported",
        "src/latentsync_mps/port/planning.py",
        "                drift.append(Drift(kind.rule.id, expect.file, expect.min, found))",
        "                pass",
        ("tests/test_engine.py", "-k", "drift"),
    ),
    Mutation(
        "residue-dropped",
        "src/latentsync_mps/port/planning.py",
        "        plan.findings += residue",
        "        plan.findings += []",
        ("tests/test_engine.py", "-k", "drift or residue"),
    ),
    Mutation(
        "interpolate-wraps-twice",
        "src/latentsync_mps/port/rules/upcast_call.py",
        "            return updated_node  # already computing in the target dtype",
        "            pass",
        # No rule of ours uses upcast-call any more (interpolate-float32 goes through the helper).
        ("tests/test_rule_kinds.py", "-k", "upcast"),
    ),
    Mutation(
        "manifest-path-escape-trusted",
        "src/latentsync_mps/port/manifest.py",
        '            if Path(path).is_absolute() or ".." in Path(path).parts:',
        "            if False:",
        ("tests/test_safety.py", "-k", "untrustworthy_manifest"),
    ),
    Mutation(
        "revert-replaces-a-symlinked-file",
        "src/latentsync_mps/port/tree.py",
        '        return "a symbolic link (not followed for writing)"',
        "        return None",
        ("tests/test_safety.py", "-k", "became_a_symlink"),
    ),
    Mutation(
        "revert-writes-through-a-symlinked-folder",
        "src/latentsync_mps/port/tree.py",
        "    if not resolved.is_relative_to(tree):",
        "    if False:",
        ("tests/test_safety.py", "-k", "symlinked_folder"),
    ),
    Mutation(
        "doctor-exits-0-on-a-blocker",
        "src/latentsync_mps/cli/commands/doctor.py",
        "        raise typer.Exit(int(Exit.DOCTOR_BLOCKER))",
        "        pass",
        ("tests/test_doctor.py", "-k", "cli_here or exit_code_on_the_fixture"),
    ),
    Mutation(
        "black-mouth-not-checked",
        "src/latentsync_mps/payload/verify/checks.py",
        "    if mouth.size == 0 or mouth_mean < 8.0:",
        "    if False:",
        ("tests/test_verify.py", "-k", "black-output"),
    ),
    Mutation(
        "nan-unet-output-not-checked",
        "src/latentsync_mps/payload/verify/checks.py",
        "    if not torch.isfinite(out).all():",
        "    if False:",
        ("tests/test_verify.py", "-k", "nan"),
    ),
    Mutation(
        "float64-finding-disabled",
        "src/latentsync_mps/payload/mpssim/simulator.py",
        "        if dtype is torch.float64:\n            summary =",
        "        if False:\n            summary =",
        ("tests/test_mps_sim.py", "-k", "float64"),
    ),
    Mutation(
        "device-mixing-check-disabled",
        "src/latentsync_mps/payload/mpssim/simulator.py",
        '                if value.device.type == "cpu":',
        "                if False:",
        ("tests/test_mps_sim.py", "-k", "mixed"),
    ),
    Mutation(
        "chunking-never-engaged",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        '    return kind == "mps"',
        "    return False",
        ("tests/test_chunking.py",),
    ),
    # Issue 24: the behaviours a hand check found unpinned, and a few more found beside them. Each is
    # a small, plausible defect; the tests named are the ones written for it.
    Mutation(
        "attention-chunk-sized-from-the-input-dtype",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        "    element = max(query.element_size(), 4)  # the MPS math kernel keeps scores in float32",
        "    element = query.element_size()",
        ("tests/test_chunking.py", "-k", "attention"),
    ),
    Mutation(
        "nearest-not-upcast-on-mps",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        "        return functional.interpolate(upcast, size, scale_factor, mode, **options).to(input.dtype)",
        "        return functional.interpolate(input, size, scale_factor, mode, **options)",
        ("tests/test_own_torch.py", "-k", "nearest"),
    ),
    Mutation(
        "nearest-over-frames-not-upcast-on-mps",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        "        upcast = input.to(_torch().float32)",
        "        upcast = input",
        ("tests/test_own_torch.py", "-k", "nearest"),
    ),
    Mutation(
        "cuda-index-refused",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        '(kind == "cuda" and (not colon or index.isdigit()))',
        '(kind == "cuda" and not colon)',
        ("tests/test_runtime_helper.py", "-k", "device"),
    ),
    Mutation(
        "cuda-index-not-checked",
        "src/latentsync_mps/payload/runtime/_lsync_port.py",
        '(kind == "cuda" and (not colon or index.isdigit()))',
        '(kind == "cuda")',
        ("tests/test_runtime_helper.py", "-k", "device or invalid"),
    ),
    Mutation(
        "absent-overload-judged-by-disagreeing-siblings",
        "src/latentsync_mps/payload/mpssim/simulator.py",
        "        if statuses and len(statuses) == 1:",
        "        if statuses:",
        ("tests/test_target_torch.py", "-k", "lacks or overload"),
    ),
    Mutation(
        "absent-overload-never-judged-by-name",
        "src/latentsync_mps/payload/mpssim/simulator.py",
        "        if statuses and len(statuses) == 1:",
        "        if False:",
        ("tests/test_target_torch.py", "-k", "lacks or overload"),
    ),
    Mutation(
        "dtype-rules-only-for-the-default-overload",
        "src/latentsync_mps/payload/mpssim/simulator.py",
        '            info.rules = self._rules.get(info.name.split("::", 1)[-1].split(".", 1)[0], [])',
        '            info.rules = self._rules.get(info.name.split("::", 1)[-1], [])',
        ("tests/test_target_torch.py", "-k", "dtype_rules"),
    ),
    Mutation(
        "newest-in-a-range-compared-as-text",
        "src/latentsync_mps/pack/target_torch.py",
        "    newest = max(inside, key=Version)",
        "    newest = max(inside)",
        ("tests/test_target_torch.py", "-k", "range or version"),
    ),
    Mutation(
        "newest-known-compared-as-text",
        "src/latentsync_mps/pack/target_torch.py",
        "    return max(known_versions(), key=Version)",
        "    return max(known_versions())",
        ("tests/test_target_torch.py", "-k", "range or version or newest"),
    ),
    Mutation(
        "wildcard-pin-taken-as-a-version",
        "src/latentsync_mps/pack/target_torch.py",
        '    pinned = [s for s in specifier if s.operator in ("==", "===") and "*" not in s.version]',
        '    pinned = [s for s in specifier if s.operator in ("==", "===")]',
        ("tests/test_target_torch.py", "-k", "range or wildcard"),
    ),
    Mutation(
        "revert-skips-a-deleted-file",
        "src/latentsync_mps/port/transaction.py",
        '        if file.state == "original" or (file.state == "missing" and entry.original is None):',
        '        if file.state in ("original", "missing"):',
        ("tests/test_engine.py", "-k", "revert"),
    ),
    Mutation(
        "backup-hash-not-checked",
        "src/latentsync_mps/port/manifest.py",
        "        if sha256(data) != expected_hash:",
        "        if False:",
        ("tests/test_engine.py", "-k", "revert or backup"),
    ),
    Mutation(
        "stale-lock-file-not-truncated",
        "src/latentsync_mps/port/manifest.py",
        "            os.ftruncate(fd, 0)",
        "            pass",
        ("tests/test_reliability.py", "-k", "lock"),
    ),
    Mutation(
        "detection-rules-left-out-of-the-no-op-digest",
        "src/latentsync_mps/port/planning.py",
        "    digested = [*plan.rules, *pack.findings]",
        "    digested = list(plan.rules)",
        ("tests/test_noop_digest.py",),
    ),
    Mutation(
        "markers-joined-without-parentheses",
        "src/latentsync_mps/port/rules/requirements.py",
        '    return Marker(f"({first}) and ({second})")',
        '    return Marker(f"{first} and {second}")',
        ("tests/test_rule_kinds.py", "-k", "requirement or marker"),
    ),
    Mutation(
        "bfloat16-gets-no-forecast-row",
        "src/latentsync_mps/pack/forecast_tables.py",
        '    dtype = "float16" if dtype == "bfloat16" else dtype',
        "    pass",
        ("tests/test_doctor_forecast.py",),
    ),
    Mutation(
        "bfloat16-forecast-as-float32",
        "src/latentsync_mps/pack/forecast_tables.py",
        '    dtype = "float16" if dtype == "bfloat16" else dtype',
        '    dtype = "float32" if dtype == "bfloat16" else dtype',
        ("tests/test_doctor_forecast.py",),
    ),
    Mutation(
        "parity-square-of-the-mean-difference",
        "src/latentsync_mps/payload/verify/reference.py",
        "    mse = float((diff**2).mean())",
        "    mse = float(diff.mean() ** 2)",
        ("tests/test_parity.py", "-k", "squared"),
    ),
    Mutation(
        "parity-square-of-the-mean-absolute-difference",
        "src/latentsync_mps/payload/verify/reference.py",
        "    mse = float((diff**2).mean())",
        "    mse = float(np.abs(diff).mean() ** 2)",
        ("tests/test_parity.py", "-k", "squared"),
    ),
    Mutation(
        "fixture-landmark-fit-not-reproducible",
        "tests/fixtures/latentsync/latentsync/utils/affine_transform.py",
        'torch.linalg.lstsq(torch.cat([src, ones], dim=1), dst, driver="gelsd")',
        "torch.linalg.lstsq(torch.cat([src, ones], dim=1), dst)",
        ("tests/test_parity_reference.py", "-k", "same_bits"),
    ),
    Mutation(
        "tests-write-into-the-users-cache",
        "tests/conftest.py",
        'os.environ["XDG_CACHE_HOME"] = str(TEST_CACHE)',
        "pass",
        ("tests/test_test_cache.py",),
    ),
]


def copy_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored: no .venv, no caches)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in the index
        target = destination / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LSYNC_PORT_DEBUG", "PYTHONPATH")}
    return env | {"PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_the_copy(copy: Path) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import latentsync_mps; print(latentsync_mps.__file__)"],
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"mutation_check: the copy's tests would import {where}, not the copy's code")


def mutate(root: Path, mutation: Mutation, dry_run: bool = False) -> None:
    path = root / mutation.file
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.original)
    if count != 1:
        sys.exit(f"mutation_check: {mutation.name}: the snippet occurs {count} times in {mutation.file}, not once")
    if not dry_run:
        path.write_text(text.replace(mutation.original, mutation.replacement), encoding="utf-8")


def run_tests(copy: Path, arguments: tuple[str, ...]) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *arguments]
    done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def union(mutations: list[Mutation]) -> list[tuple[str, ...]]:
    """The named test selections, each once (a -k expression stays with its file)."""
    seen: list[tuple[str, ...]] = []
    for mutation in mutations:
        if mutation.tests not in seen:
            seen.append(mutation.tests)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unmutated copy")
    args = parser.parse_args()
    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name:40} {mutation.file}  ->  pytest {' '.join(mutation.tests)}")
        return 0
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no such mutation: {', '.join(sorted(unknown))} (see --list)")
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]

    for mutation in chosen:  # every snippet is there exactly once, before anything runs
        mutate(REPO, mutation, dry_run=True)
    with tempfile.TemporaryDirectory(prefix="lsync-mutation-") as scratch:
        base = Path(scratch) / "base"
        copy_tree(base)
        check_imports_the_copy(base)
        if not args.no_baseline:
            for selection in union(chosen):
                started = time.perf_counter()
                code, last = run_tests(base, selection)
                print(f"baseline   {time.perf_counter() - started:6.0f} s  pytest {' '.join(selection)}: {last}")
                if code != 0:
                    print("mutation_check: the tests fail without any mutation; fix them first", file=sys.stderr)
                    return 2
        missed = []
        for mutation in chosen:
            copy = Path(scratch) / mutation.name
            copy_tree(copy)
            mutate(copy, mutation)
            check_imports_the_copy(copy)
            started = time.perf_counter()
            code, last = run_tests(copy, mutation.tests)
            verdict = "caught" if code == 1 else "MISSED" if code == 0 else f"error (pytest exit {code})"
            print(f"{verdict:10} {time.perf_counter() - started:6.0f} s  {mutation.name}: {last}", flush=True)
            if verdict != "caught":
                missed.append(mutation.name)
            shutil.rmtree(copy, ignore_errors=True)
    print(
        f"{len(chosen) - len(missed)} of {len(chosen)} mutations caught"
        + (f"; not: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
