#!/usr/bin/env python3
"""Re-port every known upstream release (and the newest commit) and report drift, residue and
whether the port still runs.

For each release: check out the commit into a fresh folder, apply, apply again (must change
nothing), scan (no CUDA residue on the inference path), compile, verify --device cpu and
--device mps-sim with synthetic weights. Writes a JSON report and a markdown table (also to
$GITHUB_STEP_SUMMARY when set). Exit 1 when any step fails.

    scripts/repatch_upstream.py                                  # all of patches/upstreams.toml + newest commits
    scripts/repatch_upstream.py --source https://github.com/bytedance/LatentSync=/path/to/clone
    scripts/repatch_upstream.py --release 1.6 --release main --skip-verify
    scripts/repatch_upstream.py --python /path/to/venv-with-latentsync-deps/bin/python
    scripts/repatch_upstream.py --python /venv/bin/python --python 1.0=/venv-1.0/bin/python   # 1.0: diffusers 0.11
    scripts/repatch_upstream.py ... --doc docs/upstream-report.md --readme README.md   # the tables, measured
    scripts/repatch_upstream.py --combine a.json --combine b.json --doc ...   # from runs made one release at a time

A source is a git URL or a local git folder (a clone or a bare mirror); by default each release's
own repository URL is cloned (needs network). `--source URL=PATH` maps a repository to a local one.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.pack.ruleset import RulePack
from latentsync_mps.port import scanning, transaction
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.rulepack import load

STEPS = ("checkout", "apply", "reapply", "scan", "compile", "verify-cpu", "verify-mps-sim")


@dataclass
class Step:
    status: str  # pass | fail | skip
    seconds: float = 0.0
    detail: str = ""
    counts: dict = field(default_factory=dict)
    # CPU time (user+sys) of the processes the step ran (verify's child), and the 1-minute load
    # average when it ended: on a shared machine, wall time alone says little.
    child_cpu_seconds: float = 0.0
    load_average: float = 0.0
    target_torch: str = ""  # verify mps-sim: the torch whose MPS kernels judged the run


@dataclass
class Row:
    release: str
    profile: str
    repository: str
    commit: str
    steps: dict[str, Step] = field(default_factory=dict)
    stack: str = ""  # the host stack verify modelled (patches/stacks.toml); "" in reports written before stacks

    @property
    def passed(self) -> bool:
        return all(step.status != "fail" for step in self.steps.values())


@dataclass
class Target:
    release: str
    profile: str
    repository: str
    commit: str  # a commit, or "HEAD" for the newest commit of the default branch
    stack: str = ""  # the host stack verify models; a release with several (the wrapper) is one target per stack


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def local_repository(repository: str, sources: dict[str, str], work: Path) -> Path:
    """A local git folder for the repository: a mapped one, or a clone made once per run."""
    if repository in sources:
        return Path(sources[repository])
    if Path(repository).exists():
        return Path(repository)
    target = work / "clones" / repository.rstrip("/").rsplit("/", 1)[-1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--no-checkout", repository, str(target))
    return target


def checkout(repository: Path, commit: str, destination: Path) -> str:
    """Extract the tree of `commit` into destination (no .git: a user's plain checkout)."""
    full = git("rev-parse", "--verify", f"{commit}^{{commit}}", cwd=repository)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", full], cwd=repository, capture_output=True, check=True
    ).stdout
    destination.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    return full


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(function):
    started, cpu = time.perf_counter(), _children_cpu()
    try:
        step = function()
    except Exception as error:  # a step's failure is a row of the report, not a crash of the job
        step = Step("fail", detail=f"{type(error).__name__}: {error}")
    step.seconds = round(time.perf_counter() - started, 2)
    step.child_cpu_seconds = round(_children_cpu() - cpu, 2)
    step.load_average = round(os.getloadavg()[0], 2)
    return step


def run_release(target: Target, pack: RulePack, sources: dict[str, str], work: Path, args) -> Row:
    row = Row(target.release, target.profile, target.repository, target.commit, stack=target.stack)
    tree = work / "trees" / f"{target.profile}-{target.release}-{target.stack or 'default'}"

    def do_checkout() -> Step:
        repository = local_repository(target.repository, sources, work)
        row.commit = checkout(repository, target.commit, tree)[:12]
        return Step("pass", detail=row.commit)

    def do_apply() -> Step:
        plan = make_plan(tree, pack, target.profile)
        transaction.commit(plan)
        counts = {
            "files": len(plan.files),
            "rewrites": len(plan.changes),
            "drift": len(plan.drift),
            "residue": len(plan.residue),
            "problems": len(plan.problems),
        }
        detected = plan.release.name if plan.release else "unrecognised"
        failures = [f"{d.rule_id} found {d.found} in {d.file}" for d in plan.drift]
        failures += [f"{f.path}:{f.line} {f.kind}" for f in plan.residue]
        failures += [f"{p.path}: {p.reason}" for p in plan.problems]
        status = "fail" if failures else "pass"
        return Step(
            status,
            detail=f"release detected: {detected}; " + ("; ".join(failures[:5]) or "clean"),
            counts=counts,
        )

    def do_reapply() -> Step:
        plan = make_plan(tree, pack, target.profile)
        writes = [f.path for f in plan.writes]
        return Step("fail" if writes else "pass", detail=f"would rewrite {writes}" if writes else "no-op")

    def do_scan() -> Step:
        result = scanning.scan(tree, pack, target.profile)
        residue = [f for f in result.findings if f.severity == "error" and result.in_scope(f)]
        detail = "; ".join(f"{f.path}:{f.line} {f.kind}" for f in residue[:5]) or "no residue"
        return Step("fail" if residue else "pass", detail=detail, counts={"residue": len(residue)})

    def do_compile() -> Step:
        ok = compileall.compile_dir(str(tree), quiet=2, force=True, legacy=False)
        return Step("pass" if ok else "fail", detail="" if ok else "some files do not compile")

    def do_verify(device: str) -> Step:
        if args.skip_verify:
            return Step("skip", detail="--skip-verify")
        from latentsync_mps.cli.commands.verify import DEVICES
        from latentsync_mps.features.verify.runner import run_verify

        if device not in DEVICES:
            return Step("skip", detail=f"this lsync-port has no --device {device}")
        python = interpreter_for(target.release, args.python)
        report = run_verify(
            tree, pack, device=device, weights="synthetic", timeout=args.timeout, python=python, stack=target.stack
        )
        detail = report.reason or f"{report.seconds:.0f} s"
        if report.target_torch:  # mps-sim: whose MPS kernels it was judged against, and why those
            detail += f"; target torch {report.target_torch['version']} ({report.target_torch['origin']})"
            if report.target_torch.get("note"):
                detail += f" ({report.target_torch['note']})"
            stats = report.simulator
            if stats.get("macos"):  # the Mac it modelled besides the torch: macOS, and memory for the dtype policy
                memory = f", {stats['mac_memory_bytes'] / 2**30:.0f} GB" if stats.get("mac_memory_bytes") else ""
                detail += f"; simulated macOS {stats['macos']}{memory}"
        parity = next((c for c in report.checks if c.name == "parity"), None)
        if parity is not None and (parity.data or {}).get("reference") == "reused":
            detail += "; parity against the cpu verify's kept output"  # not a second CPU pipeline run
        judged_by = report.target_torch.get("version", "") if report.target_torch else ""
        return Step("pass" if report.passed else "fail", detail=detail, target_torch=judged_by)

    actions = {
        "checkout": do_checkout,
        "apply": do_apply,
        "reapply": do_reapply,
        "scan": do_scan,
        "compile": do_compile,
        "verify-cpu": lambda: do_verify("cpu"),
        "verify-mps-sim": lambda: do_verify("mps-sim"),
    }
    for name in STEPS:
        if row.steps.get("checkout", Step("pass")).status == "fail":
            row.steps[name] = Step("skip", detail="no checkout")
            continue
        row.steps[name] = timed(actions[name])
        step = row.steps[name]
        print(f"{target.profile} {target.release} {target.stack}: {name} {step.status} {step.detail}", file=sys.stderr)
    return row


def interpreter_for(release: str, pythons: list[str]) -> str | None:
    """`--python PATH` for every release, `--python RELEASE=PATH` for one (1.0 needs diffusers 0.11)."""
    chosen = None
    for entry in pythons:
        name, sep, path = entry.partition("=")
        if sep and name == release:
            return path
        if not sep:
            chosen = entry
    return chosen


def profile_stacks(profile: str, wanted: list[str]) -> list[str]:
    """The host stacks a profile's trees are verified on: its default first, then the others (or `wanted`)."""
    from latentsync_mps.pack import stacks

    fitting = sorted((s for s in stacks.load() if profile in s.profiles), key=lambda s: profile not in s.default_for)
    names = [s.name for s in fitting if not wanted or s.name in wanted]
    return names or ([""] if not wanted else [])


def targets(pack: RulePack, releases: list[str], include_head: bool, wanted_stacks: list[str] = ()) -> list[Target]:
    chosen = []
    for profile in pack.profiles.values():
        on = profile_stacks(profile.name, list(wanted_stacks))
        for release in profile.releases:
            chosen += [Target(release.name, profile.name, release.repository, release.commit, s) for s in on]
        if include_head and profile.releases:
            newest = profile.releases[-1]
            chosen += [Target("head", profile.name, newest.repository, "HEAD", s) for s in on]
    if releases:
        unknown = set(releases) - {t.release for t in chosen}
        if unknown:
            raise SystemExit(f"unknown release(s): {', '.join(sorted(unknown))}")
        chosen = [t for t in chosen if t.release in releases]
    return chosen


def markdown(rows: list[Row]) -> str:
    header = "| profile | release | host stack | commit | " + " | ".join(STEPS) + " |"
    lines = [header, "|" + "---|" * (4 + len(STEPS))]
    marks = {"pass": "✅", "fail": "❌", "skip": "–"}
    for row in rows:
        cells = []
        for name in STEPS:
            step = row.steps.get(name, Step("skip"))
            counts = ", ".join(f"{k} {v}" for k, v in step.counts.items() if v)
            if step.child_cpu_seconds >= 1:  # a verify child, or the process pool of a big apply
                counts = ", ".join(
                    filter(None, [counts, f"CPU {step.child_cpu_seconds:.0f}s, load {step.load_average:g}"])
                )
            cells.append(f"{marks[step.status]} {step.seconds:.0f}s" + (f" ({counts})" if counts else ""))
        lines.append(
            f"| {row.profile} | {row.release} | {row.stack or '–'} | `{row.commit}` | " + " | ".join(cells) + " |"
        )
    failures = [
        f"- **{r.profile} {r.release}{' on ' + r.stack if r.stack else ''}** {n}: {s.detail}"
        for r in rows
        for n, s in r.steps.items()
        if s.status == "fail"
    ]
    return "\n".join(lines + ([""] + failures if failures else [])) + "\n"


SUMMARY_STEPS = {"apply": "apply", "verify-cpu": "verify cpu", "verify-mps-sim": "verify mps-sim"}
README_START = "<!-- upstream-table:start (written by scripts/repatch_upstream.py --readme) -->"
README_END = "<!-- upstream-table:end -->"


def summary(rows: list[Row]) -> str:
    """Per release and device: which of apply, verify cpu and verify mps-sim passed (measured)."""
    marks = {"pass": "pass", "fail": "FAIL", "skip": "not run"}
    lines = [
        "| release | host stack | commit | " + " | ".join(SUMMARY_STEPS.values()) + " |",
        "|---|---|---|" + "---|" * len(SUMMARY_STEPS),
    ]
    for row in rows:
        cells = []
        for name in SUMMARY_STEPS:
            step = row.steps.get(name, Step("skip"))
            cpu = f", CPU {step.child_cpu_seconds:.0f} s" if step.child_cpu_seconds >= 1 else ""
            torch = f", torch {step.target_torch}" if step.target_torch else ""
            untabled = re.search(r"no MPS table for torch (\S+) yet", step.detail)
            if untabled:  # the stack's torch has no table yet: judged against the newest known before it
                torch += f" (the stack's {untabled.group(1)} has no MPS table yet)"
            cells.append(marks[step.status] + (f" ({step.seconds:.0f} s{cpu}{torch})" if step.status != "skip" else ""))
        lines.append(f"| {row.release} | {row.stack or '–'} | `{row.commit}` | " + " | ".join(cells) + " |")
    # Why each FAIL: one line per release and reason (both devices often fail alike).
    reasons: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for name, title in SUMMARY_STEPS.items():
            step = row.steps.get(name, Step("skip"))
            if step.status == "fail":
                label = row.release + (f" on {row.stack}" if row.stack else "")
                reasons.setdefault((label, step.detail.split("; target torch ")[0]), []).append(title)
    notes = [f"- {release}, {' and '.join(titles)}: {why}" for (release, why), titles in reasons.items()]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_doc(path: Path, rows: list[Row], args) -> None:
    """docs/upstream-report.md: the whole page comes from this run, nothing by hand."""
    import platform

    pythons = ", ".join(args.python) or sys.executable
    loads = [s.load_average for r in rows for s in r.steps.values() if s.load_average]
    load = (
        f"1-minute load average {min(loads):g} to {max(loads):g} at the end of a step" if loads else "load not recorded"
    )
    text = (
        f"# Upstream re-port, {time.strftime('%Y-%m-%d')}\n\n"
        "Written by `scripts/repatch_upstream.py` (never by hand): every release re-ported from its commit, "
        f"on {platform.system()} {platform.machine()} with {os.cpu_count()} CPU(s), no GPU; verify with synthetic "
        f"weights and stand-in face landmarks, interpreters: {pythons}. `mps-sim` is the MPS simulator on the CPU, "
        f"not a Mac, judged against the target torch of each row's host stack (patches/stacks.toml: ComfyUI "
        f"Desktop's and a manual install's for the wrapper, the tree's own pins for LatentSync) and the simulated Mac "
        f"(macOS version, memory) each mps-sim step names. Seconds are wall time; CPU is user+sys of a "
        f"step's child processes, e.g. verify's child ({load}: the machine is shared, and a verify's wall time "
        f"is its CPU time divided by its share of a core). Time limit per verify: {args.timeout:g} s. "
        "verify mps-sim runs after verify cpu of the same tree and inputs, so its parity check compares with "
        "the cpu run's kept output where the step says so, instead of running the CPU pipeline again.\n\n"
        "## Per release and device\n\n" + summary(rows) + "\n## Every step\n\n" + markdown(rows)
    )
    path.write_text(text)


def write_readme(path: Path, rows: list[Row]) -> None:
    """Replace the marked table in README.md with this run's summary."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{path}: no {README_START} ... {README_END} block to replace")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    stamp = f"Measured {time.strftime('%Y-%m-%d')} by `scripts/repatch_upstream.py`:\n\n"
    path.write_text(head + README_START + "\n" + stamp + summary(rows) + README_END + tail)


def _step(fields: dict) -> Step:
    step = Step(**fields)
    # A report written before Step.target_torch named it only in the detail ("target torch X.Y.Z (...)").
    if not step.target_torch and "target torch " in step.detail:
        step.target_torch = step.detail.split("target torch ", 1)[1].split()[0]
    return step


def rows_from(report: Path) -> list[Row]:
    """The rows of an earlier run's --json report (one release per run on a busy machine)."""
    try:
        data = json.loads(report.read_text())
        return [
            Row(
                r["release"],
                r["profile"],
                r["repository"],
                r["commit"],
                {name: _step(step) for name, step in r["steps"].items()},
                r.get("stack", ""),
            )
            for r in data["rows"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{report}: not a report written by this script's --json ({error})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="URL=PATH",
        help="use a local git folder for a repository",
    )
    parser.add_argument(
        "--release",
        action="append",
        default=[],
        help="only this release (repeatable); 'head' is the newest commit",
    )
    parser.add_argument("--no-head", action="store_true", help="skip the newest commit of each repository")
    parser.add_argument(
        "--stack",
        action="append",
        default=[],
        help="only this host stack (repeatable; default: every stack of each profile, patches/stacks.toml)",
    )
    parser.add_argument("--skip-verify", action="store_true", help="skip the verify steps")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="[RELEASE=]PATH",
        help="interpreter with the upstream's dependencies, for verify; RELEASE=PATH for one release (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="verify time limit per run, seconds (wall: raise it on a busy machine; with --combine, the runs' limit)",
    )
    parser.add_argument("--patches", type=Path, default=None, help="rule packs (default: the installed ones)")
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the release names as a JSON list (for a CI matrix) and exit",
    )
    parser.add_argument("--json", type=Path, default=Path("repatch-report.json"), help="where to write the JSON report")
    parser.add_argument("--markdown", type=Path, default=Path("repatch-report.md"), help="where to write the table")
    parser.add_argument("--doc", type=Path, help="also write the whole report page (docs/upstream-report.md)")
    parser.add_argument("--readme", type=Path, help="replace the marked release table in this README")
    parser.add_argument(
        "--combine",
        action="append",
        type=Path,
        default=[],
        metavar="REPORT.json",
        help="run nothing: write the tables from these earlier --json reports, in this order (repeatable)",
    )
    args = parser.parse_args(argv)

    sources = dict(s.split("=", 1) for s in args.source)
    pack = load(args.patches or patches_dir())
    if args.list:
        print(json.dumps(sorted({t.release for t in targets(pack, [], include_head=not args.no_head)})))
        return 0
    rows = [row for report in args.combine for row in rows_from(report)]
    if not args.combine:
        with tempfile.TemporaryDirectory(prefix="lsync-repatch-") as work_dir:
            for target in targets(pack, args.release, include_head=not args.no_head, wanted_stacks=args.stack):
                rows.append(run_release(target, pack, sources, Path(work_dir), args))
    report = {"rows": [asdict(r) | {"passed": r.passed} for r in rows], "passed": all(r.passed for r in rows)}
    args.json.write_text(json.dumps(report, indent=2))
    table = markdown(rows)
    args.markdown.write_text(table)
    if args.doc:
        write_doc(args.doc, rows, args)
    if args.readme:
        write_readme(args.readme, rows)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write("## Upstream re-port\n\n" + table)
    print(table)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
