"""The `lsync-port` command. Thin: it parses options, calls the engine and renders the result.

Heavy modules (libcst, the engine) are imported inside the commands so that `--help` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape


class Exit(IntEnum):
    """The exit codes of every command. Each member's docstring is its meaning, for a person:
    scripts/gen_reference.py writes docs/reference/exit-codes.md from them."""

    OK = 0
    """ok"""
    INTERNAL = 1
    """internal error: a bug in lsync-port (run with `LSYNC_PORT_DEBUG=1` for the traceback)"""
    USAGE = 2
    """bad path, option, profile or rule id; or the tree cannot be written (full disk, permission,
    read-only file system): one line says which file, that nothing was changed, and what to do"""
    NOT_UPSTREAM = 3
    """not a recognised upstream tree (LatentSync or ComfyUI-LatentSyncWrapper)"""
    NOT_PATCHED = 4
    """`revert` on a tree lsync-port has not patched"""
    PARTIAL = 5
    """applied, but some files could not be processed (listed: syntax errors, symlinks, files
    edited by hand)"""
    STRICT = 6
    """`--strict`: drift or residue found"""
    REFUSED = 7
    """`revert` kept files edited by hand since apply (`--force` restores them)"""
    MANIFEST = 8
    """`.lsync-port/manifest.json` is corrupt or names paths outside the tree"""
    RULES = 9
    """a rule file under `patches/` is invalid"""
    DOCTOR_BLOCKER = 10
    """`doctor` found a blocker"""
    VERIFY_FAILED = 11
    """`verify` failed: the port does not run on that device (the report says why)"""
    LOCKED = 12
    """another `apply` or `revert` holds the tree's lock (`.lsync-port/lock`, like git's
    `index.lock`); it says which process (pid, host, command, since). The lock of a killed process
    is taken over; `LSYNC_PORT_LOCK_WAIT` (seconds, default 5) is how long to wait first"""
    FORECAST_FAILED = 13
    """`forecast` failed: the shape-only run did not finish (the report says where)"""


EXIT_CODES_HELP = """
Exit codes: 0 ok · 2 bad path, option, profile or rule id, or a tree that cannot be written
(full disk, permission, read-only; nothing changed) · 3 not a recognised upstream tree ·
4 tree not patched (revert) · 5 applied, but some files could not be processed ·
6 --strict and drift or residue found · 7 revert kept files edited by hand (use --force) ·
8 corrupt manifest · 9 invalid rule file · 10 doctor found a blocker · 11 verify failed ·
12 another apply or revert is running on the tree · 13 forecast failed ·
1 internal error (a bug: please report it).
"""

app = typer.Typer(
    name="lsync-port",
    help=(
        "Port a LatentSync checkout (or ComfyUI-LatentSyncWrapper) to Apple Silicon and back.\n\n"
        "Typical use:  lsync-port apply ./LatentSync --dry-run --diff  (look),  "
        "lsync-port apply ./LatentSync  (port),  lsync-port status ./LatentSync,  "
        "lsync-port revert ./LatentSync  (undo, byte for byte).\n\n"
        "The ported tree picks its device when it runs: mps, else cuda, else cpu; set "
        "LATENTSYNC_DEVICE=cpu|mps|cuda and LATENTSYNC_DTYPE=float32|float16|bfloat16 to override."
    ),
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _exit_codes_named(command):
    """Fill `{Exit.NAME}` in a command's docstring with the code, so that its --help never states a
    number the Exit enum does not give (tests/test_help_exit_codes.py)."""
    command.__doc__ = re.sub(r"\{Exit\.(\w+)\}", lambda m: str(Exit[m.group(1)].value), command.__doc__ or "")
    return command


def _print_version(asked: bool) -> None:
    if asked:
        from . import __version__

        console.print(f"lsync-port {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print lsync-port's version and exit."),
    ] = False,
) -> None:
    pass


TreeArg = Annotated[Path, typer.Argument(help="Root of the upstream checkout.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report instead of tables.")]
StackOpt = Annotated[
    str | None,
    typer.Option(
        "--stack",
        help="The host stack to model (patches/stacks.toml): comfyui-desktop-macos (the wrapper's default), "
        "comfyui-manual-macos, tree-pins (plain LatentSync's default: the torch its requirements pin). The tree's "
        "code then sees only what that Mac set-up has, and mps-sim judges against the stack's torch.",
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", help="Force the profile (latentsync, comfyui-latentsyncwrapper) instead of detecting it."
    ),
]


def fail(message: str, code: Exit) -> typer.Exit:
    errors.print(f"[red]error:[/] {escape(message)}", highlight=False)  # 'lsync-port[verify]' is not markup
    return typer.Exit(int(code))


def _pack():
    from .resources import patches_dir
    from .ruleset import RuleFileError, load

    try:
        return load(patches_dir())
    except RuleFileError as error:
        raise fail(str(error), Exit.RULES) from None


def _engine_call(function, *args, **kwargs):
    """Run an engine function, turning its expected errors into messages and exit codes."""
    from .engine import TreeError

    try:
        return function(*args, **kwargs)
    except TreeError as error:
        raise fail(str(error), Exit(error.exit_code)) from None
    except PermissionError as error:
        raise fail(f"permission denied: {error.filename} (nothing more was written)", Exit.USAGE) from None


def _interpreter(python: str | None) -> str | None:
    """--python as the absolute path the child is started with (it runs in a folder of its own, where a
    relative path names nothing): a path, else a name on PATH."""
    if python is None:
        return None
    candidate = Path(python).expanduser()
    if candidate.is_file():
        return str(candidate.absolute())
    found = shutil.which(python) if os.sep not in python else None
    if found is None:
        raise fail(f"--python {python}: no such interpreter", Exit.USAGE)
    return found


def _needs(command: str, tree: Path, python: str | None, code: Exit) -> None:
    """One line, before the run, when the interpreter lacks what the command imports (needs.py)."""
    from .needs import Unavailable, check

    try:
        check(command, tree, python)
    except Unavailable as error:
        raise fail(str(error), code) from None


@contextmanager
def _locked(tree: Path, command: str):
    """The tree's lock for one apply or revert; says so when it took over a dead process's lock."""
    from . import engine
    from .manifest import describe_holder

    lock = _engine_call(engine.lock_tree, tree, command)
    try:
        if lock.stale:
            errors.print(
                f"[yellow]note:[/] took over the lock of a run that had died ({describe_holder(lock.stale)})",
                highlight=False,
            )
        yield lock
    finally:
        lock.release()


@app.command()
@_exit_codes_named
def apply(
    tree: TreeArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Also print a unified diff of every change.")] = False,
    json_out: JsonOpt = False,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Only these rule ids, comma-separated (see list-rules).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help=f"Exit {Exit.STRICT.value} when a rule drifted or CUDA residue remains.")
    ] = False,
    profile: ProfileOpt = None,
) -> None:
    """Rewrite TREE so that it runs on Apple Silicon (and still on CUDA and CPU).

    Originals are backed up under TREE/.lsync-port/ with a manifest; applying again changes
    nothing; a tree patched by another lsync-port version is upgraded from its originals.
    """
    from . import engine

    rule_ids = _rule_ids(rules)

    def plan_it():
        stored = _stored_plan(tree, profile, rule_ids)
        return stored if stored is not None else _engine_call(engine.make_plan, tree, _pack(), profile, rule_ids)

    if dry_run:
        plan = plan_it()
    else:
        with _locked(tree, "apply"):  # from reading the manifest to writing it: one process at a time
            plan = plan_it()
            if not isinstance(plan, engine.StoredPlan):
                _engine_call(engine.commit, plan)
    _show_plan(plan, dry_run, diff, json_out, strict)


def _rule_ids(rules: str | None) -> list[str] | None:
    return [r.strip() for r in rules.split(",") if r.strip()] if rules else None


def _stored_plan(tree: Path, profile: str | None, rule_ids: list[str] | None):
    """A tree and rules as the last apply left them: its report, before any rule is loaded
    (engine/noop.py); None when there is work to do."""
    from .engine import noop
    from .resources import patches_dir

    return noop.stored_plan(tree, patches_dir(), profile, rule_ids)


def _show_plan(plan, dry_run: bool, diff: bool, json_out: bool, strict: bool) -> None:
    """apply's report and exit code."""
    from . import report

    if json_out:
        print(json.dumps(report.plan_to_json(plan, written=not dry_run and bool(plan.writes)), indent=2))
    else:
        report.render_plan(console, plan, written=not dry_run, show_diff=diff)
    if plan.problems:
        raise typer.Exit(int(Exit.PARTIAL))
    if strict and (plan.drift or plan.residue):
        raise typer.Exit(int(Exit.STRICT))


class _NotForTheEarlyCheck(Exception):
    """The command line is not a plain `apply`: typer parses it (and explains any mistake)."""


class _ApplyOptions(argparse.ArgumentParser):
    """`apply`'s options, for the no-op check that runs before typer (see `_reapply_early`).
    tests/test_noop_fast_path.py checks that they are the typer command's."""

    def __init__(self) -> None:
        super().__init__(prog="lsync-port apply", add_help=False, allow_abbrev=False, exit_on_error=False)
        self.add_argument("tree", type=Path)
        for flag in ("--dry-run", "--diff", "--json", "--strict"):
            self.add_argument(flag, action="store_true")
        self.add_argument("--rules")
        self.add_argument("--profile")

    def error(self, message: str):  # argparse would print and exit; typer has the last word instead
        raise _NotForTheEarlyCheck(message)


def _reapply_early(argv: list[str]) -> bool:
    """Answer `lsync-port apply TREE ...` on a tree nothing touched since the last apply, before
    typer parses anything: typer builds a pydantic validator for every parameter of the command it
    runs, which takes longer (0.15 s here) than this whole answer. True when it answered (the
    report is printed; typer.Exit carries a non-zero exit code); False: run typer as usual."""
    if not argv or argv[0] != "apply":
        return False
    try:
        args = _ApplyOptions().parse_args(argv[1:])
    except (_NotForTheEarlyCheck, argparse.ArgumentError):
        return False
    rule_ids = _rule_ids(args.rules)
    # A first look without the lock, so that real work goes to typer at once; then, for a real
    # apply, the answer is only given while holding the lock, as apply does.
    plan = _stored_plan(args.tree, args.profile, rule_ids)
    if plan is None:
        return False
    if not args.dry_run:
        with _locked(args.tree, "apply"):
            plan = _stored_plan(args.tree, args.profile, rule_ids)
            if plan is None:
                return False
    _show_plan(plan, args.dry_run, args.diff, args.json, args.strict)
    return True


@app.command()
@_exit_codes_named
def scan(
    tree: TreeArg,
    json_out: JsonOpt = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help=f"Exit {Exit.STRICT.value} on CUDA residue on the inference path or on drift."),
    ] = False,
    profile: ProfileOpt = None,
) -> None:
    """List what in TREE is still CUDA-only, with file:line, why and the fix, and which rules would
    match nothing where they are expected (drift). Changes nothing."""
    from . import engine, report

    result = _engine_call(engine.scan, tree, _pack(), profile)
    residue = [f for f in result.findings if f.severity == "error" and result.in_scope(f)]
    if json_out:
        print(json.dumps(report.scan_to_json(result), indent=2))
    else:
        scope = f"profile {result.profile.name}" if result.profile else "no known profile: every file counts"
        if result.profile is not None:
            scope += f" · release {result.release.name if result.release else 'not recognised'}"
        console.print(f"[bold]scan[/] {result.tree} · {scope}")
        report.render_drift(console, result.drift)
        report.render_findings(console, residue, "CUDA-only on the inference path")
        others = [f for f in result.findings if f not in residue]
        report.render_findings(console, others, "Elsewhere, and warnings")
        report.render_own_files(console, result.own)
        report.render_problems(console, result.problems)
    if strict and (residue or result.drift):
        raise typer.Exit(int(Exit.STRICT))


@app.command()
@_exit_codes_named
def status(tree: TreeArg, json_out: JsonOpt = False) -> None:
    """Tell whether TREE is patched, by which version, and which files differ from the manifest."""
    from . import engine, report

    result = _engine_call(engine.status, tree)
    if json_out:
        print(json.dumps(report.status_to_json(result), indent=2))
        return
    manifest = result.manifest
    if manifest is None:
        console.print(f"{result.tree}: not patched by lsync-port.")
        return
    console.print(
        f"{result.tree}: [bold]{result.summary}[/] by lsync-port {manifest.tool_version} "
        f"(profile {manifest.profile}, release {manifest.release or 'unrecognised'}, {len(manifest.rules)} rules)."
    )
    from . import __version__

    if manifest.tool_version != __version__:
        console.print(f"This is lsync-port {__version__}: `lsync-port apply {result.tree}` upgrades the port.")
    for f in result.files:
        if f.state != "patched":
            console.print(f"  {f.path}: {f.state}")
    if (result.tree / ".git").exists():  # what a git pull would do to the port (update.py)
        from .update import diagnose

        advice = diagnose(result.tree).advice(result.tree)
        if advice:
            console.print(advice, highlight=False)


@app.command()
@_exit_codes_named
def revert(
    tree: TreeArg,
    force: Annotated[
        bool, typer.Option("--force", help="Also restore files edited by hand since apply (their edits are lost).")
    ] = False,
) -> None:
    """Restore every file apply changed, byte for byte, and remove what it added."""
    from . import engine

    with _locked(tree, "revert"):
        result = _engine_call(engine.revert, tree, force)
    for path in result.restored:
        console.print(f"restored {path}")
    for path in result.removed:
        console.print(f"removed  {path}")
    for problem in result.refused:
        errors.print(f"[yellow]kept[/] {problem.path}: {problem.reason}")
    if result.refused:
        raise fail(
            f"{len(result.refused)} file(s) not restored; the manifest is kept so revert can be run again.",
            Exit.REFUSED,
        )
    console.print(f"[green]Reverted[/] {len(result.restored)} file(s), removed {len(result.removed)}.")


@app.command("update")
@_exit_codes_named
def update_command(tree: TreeArg) -> None:
    """Bring a ported git checkout to upstream's newer commit and port it again: revert, git pull, apply.

    Files you edited since apply are kept: update stops before changing anything and names them
    (exit {Exit.REFUSED}). A tree that ComfyUI Manager (or `git pull`) already updated under the
    port is ported again from the code git left. When the pull fails, the tree is ported again on
    the commit it had, and git's message says why (exit {Exit.USAGE}).
    """
    from .update import update

    with _locked(tree, "update"):
        result, plan = _engine_call(update, tree, _pack())
    moved = f"{result.before} → {result.after}" if result.before != result.after else f"{result.after}: no newer commit"
    stale = f"; {len(result.stale)} file(s) git had already replaced" if result.stale else ""
    console.print(f"update {tree}: {moved}; the port taken off ({len(result.restored)} file(s)){stale}, then:")
    _show_plan(plan, False, False, False, False)


DEVICES = ("auto", "mps", "cuda", "cpu", "mps-sim")
WEIGHTS = ("auto", "synthetic", "real")


@app.command()
@_exit_codes_named
def verify(
    tree: TreeArg,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="auto (mps > cuda > cpu), mps, cuda, cpu, or mps-sim: the MPS code path simulated on the CPU, "
            "every op checked against this torch's MPS kernels (float64, CPU tensors mixed in, generators).",
        ),
    ] = "auto",
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="synthetic: tiny random checkpoints built from the tree's configs (default when checkpoints/ "
            "is missing); real: the tree's checkpoints/ and real face detection.",
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.")] = 2,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames in the test clip.")] = 8,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds before the child is killed.")] = 600,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Interpreter that has the tree's dependencies (default: this one)."),
    ] = None,
    target_torch: Annotated[
        str | None,
        typer.Option(
            "--target-torch",
            help="mps-sim only: judge against this torch release's MPS kernels (X.Y.Z, one of the shipped "
            "tables) instead of the torch TREE's requirements install on a Mac (the default; no pin: the newest "
            "known release).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.json and preview.png, a contact sheet of input and output frames and "
            "mouths (default: a folder per tree and device under the system's temp folder).",
        ),
    ] = None,
    fresh_reference: Annotated[
        bool,
        typer.Option(
            "--fresh-reference",
            help="Off cpu: run the CPU float32 reference for the parity check again, even when an earlier "
            "`verify --device cpu` of the same tree and inputs left its output (by default that output is "
            "reused, and the report says so).",
        ),
    ] = False,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run smoke inference with TREE's own code on a device and say plainly whether it works.

    The tree's code runs in a child process, from the tree's root, under --timeout: device check,
    imports, video decoding (decord), audio features, a UNet forward pass, a short denoising run
    writing a video, output sanity (frames, fps, finite, mouth not black) and, off cpu, parity with
    a CPU float32 run. Exit {Exit.OK} when every check passes, {Exit.VERIFY_FAILED} when one fails.

    --device mps-sim runs the same checks on a simulated MPS device (no Mac needed): the tree sees
    mps, computes on the CPU, and every op on the device is checked against the MPS rules of the
    target torch: the one TREE's requirements install on macOS arm64 (e.g. torch==2.5.1), or
    --target-torch. An error finding (op without MPS kernel in that torch, an op x dtype it does not
    implement, a known Metal numerics defect, float64, a CPU tensor mixed in, a CPU generator drawing
    on mps, one buffer over 2**32 bytes) fails verify, listed by call site in the tree.
    """
    from .verify import render

    if device not in DEVICES:
        raise fail(f"--device must be one of {', '.join(DEVICES)}, not {device!r}", Exit.USAGE)
    if weights not in WEIGHTS:
        raise fail(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}", Exit.USAGE)
    python = _interpreter(python)
    if target_torch is not None and device != "mps-sim":
        raise fail("--target-torch applies to --device mps-sim only", Exit.USAGE)
    _needs("verify --device mps-sim" if device == "mps-sim" else "verify", tree, python, Exit.VERIFY_FAILED)
    from .verify.runner import run_verify

    pack = _pack()
    with render.progress(console, enabled=not json_out) as on_event:
        report = _engine_call(
            run_verify,
            tree,
            pack,
            device,
            weights,
            steps,
            frames,
            timeout,
            python,
            on_event=on_event,
            target_torch=target_torch,
            out_dir=out,
            reuse_reference=not fresh_reference,
            stack=stack,
        )
    if json_out:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render.render_report(console, report)
    if not report.passed:
        raise typer.Exit(int(Exit.VERIFY_FAILED))


@app.command()
@_exit_codes_named
def forecast(
    tree: TreeArg,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames per inference chunk (LatentSync: 16).")] = 16,
    steps: Annotated[
        int,
        typer.Option("--steps", min=1, help="Denoising steps run (from the 2nd on, each repeats the same live set)."),
    ] = 2,
    resolution: Annotated[
        int | None, typer.Option("--resolution", min=8, help="Frame size (default: the tree's config).")
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Interpreter that has the tree's dependencies (default: this one)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds before the child is killed.")] = 600,
    chip: Annotated[
        str | None,
        typer.Option("--chip", help='Estimate for one Apple chip only ("M3 Pro"; default: every chip in the table).'),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Forecast the device memory and the time one chunk of inference needs, at the release's real size.

    A shape-only run: the tree's own UNet (with the config its inference.sh uses) and the real VAE
    are built on PyTorch's meta device, and one chunk of FRAMES frames goes through VAE encode,
    the denoising loop with classifier-free guidance and VAE decode, with no data, so 2 CPU
    cores suffice. Every allocation is counted: peak bytes (weights included) and the largest
    single buffer, for the CUDA float16 path (flash attention, as upstream runs on NVIDIA) and for
    mps in float16 and float32, with the port's chunking on and off (a ported tree). On mps, a
    buffer over 2**32 bytes stops the run: Metal's limit. Exit {Exit.FORECAST_FAILED} when the run fails.

    The same run counts the work: FLOPs and bytes moved of the VAE, each UNet step, attention and the
    face paste, and from them a roofline estimate of seconds per chunk on each Apple chip (M1 to M4,
    base, Pro, Max: patches/apple-chips.toml), plus the CPU parts measured by scripts/bench.py. An
    estimate, a bound: the output says what it leaves out.

    Example: lsync-port apply ./LatentSync && lsync-port forecast ./LatentSync --python ~/venv/bin/python.
    The port's chunk budget, LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES, is honoured when set.
    """
    from .forecast import run_forecast
    from .forecast.render import render as render_forecast

    python = _interpreter(python)
    _needs("forecast", tree, python, Exit.FORECAST_FAILED)
    # Bad input (not a tree, no config) is a TreeError: one line and its exit code.
    report = _engine_call(run_forecast, tree, _pack(), python, frames, steps, resolution, timeout, None, chip)
    if json_out:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render_forecast(console, report)
    if not report.ok:
        raise typer.Exit(int(Exit.FORECAST_FAILED))


@app.command()
def targets(json_out: JsonOpt = False) -> None:
    """List what lsync-port knows about the Macs and code it ports for, each with its source and date.

    torch releases: one MPS table each (what `verify --device mps-sim --target-torch X` judges by), derived
    from that release's macOS arm64 wheel; "min macOS" is the oldest macOS the wheel installs on (from
    2.12 on: macOS 14), and the simulated Mac runs at least that. Host stacks: the Python environments
    ComfyUI runs the wrapper in (ComfyUI Desktop's bundled one, a manual install). Upstream releases and
    wrapper commits: the trees `apply` recognises. Last: what the package registry and the upstream
    repositories served when last checked, and the command that refreshes it all.
    """
    from .resources import patches_dir
    from .targets import gather, render

    data = gather(patches_dir())
    if json_out:
        print(json.dumps(data, indent=2))
    else:
        render(console, data)


@app.command("list-rules")
@_exit_codes_named
def list_rules(profile: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """List the rules of each profile: id, kind, releases and what they are for."""
    from rich.table import Table

    pack = _pack()
    if profile is not None and profile not in pack.profiles:
        raise fail(f"unknown profile '{profile}' (known: {', '.join(sorted(pack.profiles))})", Exit.USAGE)
    chosen = [p for p in pack.profiles.values() if profile in (None, p.name)]
    if json_out:
        print(
            json.dumps(
                {
                    p.name: [
                        {
                            "id": r.id,
                            "kind": r.kind,
                            "releases": str(r.releases) or "all",
                            "default": r.default,
                            "summary": r.summary,
                        }
                        for r in p.rules
                    ]
                    for p in chosen
                },
                indent=2,
            )
        )
        return
    from .report import add_rule_id_column

    # Rule ids are never cut (they are pasted into `explain`); below 120 columns the kind goes.
    with_kind = console.width >= 120
    for p in chosen:
        table = Table(title=f"{p.name} ({p.title})", title_justify="left", show_edge=False)
        add_rule_id_column(table, "rule", [r.id for r in p.rules])
        if with_kind:
            table.add_column("kind", no_wrap=True)
        table.add_column("releases", no_wrap=True)
        # The summary takes what is left (rich would not fold it below its longest word).
        taken = [max(len(r.id) for r in p.rules) + 1, max(len(str(r.releases) or "all") for r in p.rules)]
        taken += [max(len(r.kind) for r in p.rules)] if with_kind else []
        room = console.width - sum(taken) - 3 * len(taken) - 2
        table.add_column("summary", overflow="fold", width=max(room, 20))
        for r in p.rules:
            rule = r.id + ("" if r.default else " (off by default)")
            table.add_row(rule, *([r.kind] if with_kind else []), str(r.releases) or "all", r.summary)
        console.print(table)


@app.command()
@_exit_codes_named
def explain(rule_id: Annotated[str, typer.Argument(help="A rule id from list-rules.")]) -> None:
    """Show one rule in full: why it exists, where it applies, and its before/after examples."""
    pack = _pack()
    rule = pack.rule(rule_id)
    if rule is None:
        raise fail(f"no rule '{rule_id}'; `lsync-port list-rules` lists them", Exit.USAGE)
    console.print(f"[bold]{rule.id}[/] ({rule.kind}, profile {rule.profile}, releases {str(rule.releases) or 'all'})")
    console.print(rule.summary, highlight=False)
    console.print(f"files: {', '.join(rule.files)}" + (f"; except {', '.join(rule.exclude)}" if rule.exclude else ""))
    for expect in rule.expect:
        console.print(
            f"expected: at least {expect.min} match(es) in {expect.file} for releases {str(expect.releases) or 'all'}"
        )
    console.print(f"defined in {rule.source}")
    for example in rule.examples:
        console.print("\n[bold]before[/]" + (f" ({example.path})" if example.path else ""))
        console.print(example.before, markup=False, highlight=False, end="")
        if example.report is not None:
            console.print(f"[dim](reported at line(s): {', '.join(map(str, example.report)) or 'none'})[/]")
        elif example.after is None:
            console.print("[dim](stays unchanged)[/]")
        else:
            console.print("[bold]after[/]")
            console.print(example.after, markup=False, highlight=False, end="")


@app.command("check-rules")
@_exit_codes_named
def check_rules(
    directory: Annotated[
        Path,
        typer.Argument(
            help="A rule pack: the folder you would give as LSYNC_PORT_PATCHES (with <profile>/profile.toml).",
            show_default=False,
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Validate a rule pack and run every example of every rule (the counterpart of `fixit test`).

    Loads DIR as LSYNC_PORT_PATCHES=DIR would, so a malformed file fails here with the file and
    rule it concerns (exit {Exit.RULES}). Then runs each example: a rewriting rule's `before` must become its
    `after` (and stay so when run again), a detection-only rule's `before` must be reported at the
    lines its `report` lists. Prints pass/fail per example; exits {Exit.RULES} when any fails.
    """
    from .rulecheck import check_pack
    from .ruleset import RuleFileError, load

    if not directory.is_dir():
        raise fail(f"{directory}: no such directory (give a rule pack folder)", Exit.USAGE)
    try:
        pack = load(directory)
    except RuleFileError as error:
        raise fail(str(error), Exit.RULES) from None
    results = list(check_pack(pack))
    failed = [r for r in results if r.problem is not None]
    if json_out:
        rows = [
            {"example": r.name, "source": r.rule.source, "ok": r.problem is None, "problem": r.problem} for r in results
        ]
        print(json.dumps({"examples": rows, "failed": len(failed)}, indent=2))
    else:
        for r in results:
            mark = "[green]pass[/]" if r.problem is None else "[red]FAIL[/]"
            console.print(f"{mark} {r.name}", highlight=False)
            if r.problem is not None:
                console.print(f"     {r.rule.source}: {r.problem}", markup=False, highlight=False)
        console.print(f"{len(results) - len(failed)} of {len(results)} examples pass", highlight=False)
    if failed:
        raise typer.Exit(int(Exit.RULES))


@app.command()
@_exit_codes_named
def demo(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Where to copy the example (default: a new temporary folder).", show_default=False),
    ] = None,
    diff: Annotated[bool, typer.Option("--diff", help="Also print the diff of every ported file.")] = False,
    show_new: Annotated[
        bool, typer.Option("--show-new", help="With --diff, also the files the port adds (the runtime helper).")
    ] = False,
) -> None:
    """Copy the built-in example tree to DIRECTORY, port it, and show the report (--diff: and the diff)."""
    from . import engine, report
    from .resources import example_tree

    target = Path(tempfile.mkdtemp(prefix="lsync-port-demo-")) / "latentsync" if directory is None else directory
    if target.exists() and any(target.iterdir()):
        raise fail(f"{target} exists and is not empty; give a new folder", Exit.USAGE)
    shutil.copytree(example_tree(), target, dirs_exist_ok=True)
    console.print(f"Copied the example LatentSync-shaped tree to {target}\n")
    plan = _engine_call(engine.make_plan, target, _pack())
    _engine_call(engine.commit, plan)
    report.render_plan(console, plan, written=True, show_diff=diff or show_new, show_new=show_new)
    console.print(f"\nNext: `lsync-port status {target}`, then `lsync-port revert {target}`.")


@app.command()
@_exit_codes_named
def doctor(
    tree: Annotated[
        Path | None,
        typer.Argument(
            help="A LatentSync checkout to check too (patched? requirements? checkpoints?).", show_default=False
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="The interpreter that will run the tree (default: the one running lsync-port)."),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", min=1, help="Frame size for the memory estimate (default: the tree's config, else 512)."
        ),
    ] = None,
    live_forecast: Annotated[
        bool,
        typer.Option(
            "--forecast",
            help="Run `lsync-port forecast` on TREE (a minute or more) for the memory check, instead of the "
            "figures shipped for its release.",
        ),
    ] = False,
    stack: StackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pre-flight check of the machine and the Python that will run a port: ok / warning / blocker, with fixes.

    The facts are gathered by a small script run in that interpreter (a child process). The memory
    check compares this machine with the memory forecast of the tree's release (shipped with
    lsync-port; --forecast measures this tree). Exit {Exit.DOCTOR_BLOCKER} when any check is a blocker.
    """
    from .doctor import DoctorError, render, run

    if live_forecast and tree is None:
        raise fail("--forecast needs TREE: it forecasts that tree's memory", Exit.USAGE)
    if live_forecast:
        _needs("forecast", tree, python, Exit.USAGE)
    try:
        result = run(tree, python, resolution, _pack() if tree is not None else None, live_forecast, stack)
    except DoctorError as error:
        raise fail(str(error), Exit.USAGE) from None
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render(console, result)
    if result.blockers:
        raise typer.Exit(int(Exit.DOCTOR_BLOCKER))


def main() -> None:
    """Console entry point: user errors exit with a message, never a traceback."""
    try:
        if not _reapply_early(sys.argv[1:]):
            app()
    except typer.Exit as done:  # raised by the early answer, outside typer's own handling
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        errors.print("interrupted: files already written are complete; `lsync-port status` tells where the tree stands")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("LSYNC_PORT_DEBUG"):
            raise
        errors.print(
            f"[red]internal error:[/] {type(error).__name__}: {error}\n"
            "This is a bug in lsync-port. Run again with LSYNC_PORT_DEBUG=1 for the traceback and report it."
        )
        sys.exit(int(Exit.INTERNAL))


if __name__ == "__main__":
    main()
