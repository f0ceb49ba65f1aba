#!/usr/bin/env python3
"""Benchmarks for lsync-port (issue 7). Prints each figure next to its goal; `--write` also
records them, with the machine and the date, in docs/benchmarks.md.

    python scripts/bench.py [--tree /path/to/LatentSync] [--quick] [--write]

- apply vs the naive baseline (a fresh process that parses and regenerates every .py with
  libcst), measured in the same run on the same tree; goal apply / baseline <= 0.6
- no-op re-apply; goal <= 0.3 s
- scaling over 1x, 10x, 50x copies of the fixture: the cost of each added file should stay flat
  (linear); `--only-apply` measures these three alone
- run-time overhead of the port on CPU: the patched vs the unpatched UNet forward pass and mask
  resize of the fixture, same weights, same seed; goal <= 1.03
- verify on the fixture (cpu, and mps-sim when this lsync-port has it)
- `lsync-port --help` start-up; goal <= 0.3 s
- `lsync-port forecast` on a ported copy of a real LatentSync 1.6 checkout (`--forecast-tree`,
  `--forecast-python`: an interpreter with the tree's stack); goal <= 90 s on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "latentsync"
LSYNC = [sys.executable, "-m", "latentsync_mps.cli"]
BASELINE = """
import sys, pathlib, libcst
for path in pathlib.Path(sys.argv[1]).rglob("*.py"):
    libcst.parse_module(path.read_bytes()).bytes
"""


def wall(command: list[str], repeat: int = 1, **kwargs) -> float:
    """Best wall time of `repeat` runs of a fresh process."""
    return timed(command, repeat, **kwargs)[0]


def timed(command: list[str], repeat: int = 1, **kwargs) -> tuple[float, float]:
    """Best wall time and best CPU time (user + sys of the process and its children, e.g. apply's
    workers) of `repeat` runs of a fresh process. On a busy machine wall time measures the others
    too; CPU time is what the command itself cost."""
    import resource

    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, **kwargs)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def build_tree(target: Path, copies: int) -> Path:
    """The fixture, with copies-1 more of its `latentsync/` package under latentsync/models/:
    every copy's files are rule candidates on the inference path, like the original's."""
    shutil.copytree(FIXTURE, target)
    for index in range(1, copies):
        shutil.copytree(FIXTURE / "latentsync", target / "latentsync" / "models" / f"copy{index}")
    return target


def count_py(tree: Path) -> int:
    return sum(1 for _ in tree.rglob("*.py"))


def bench_apply(tree: Path, work: Path, repeat: int) -> dict:
    """Each run: a fresh copy of `tree`, the baseline on it, then the first apply (nothing is kept
    from an earlier run: no cache), then the no-op re-apply."""
    applied, baseline, noops = [], [], []
    for run in range(repeat):
        copy = work / f"apply-{run}"
        shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".git", ".lsync-port"))
        baseline.append(timed([sys.executable, "-c", BASELINE, str(copy)]))
        applied.append(timed([*LSYNC, "apply", str(copy), "--json"]))
        noops.append(timed([*LSYNC, "apply", str(copy), "--json"], repeat=3))
        if run < repeat - 1:
            shutil.rmtree(copy)
    plan_noop = _in_process_noop(copy)
    best = lambda runs, i: min(r[i] for r in runs)  # noqa: E731
    return {
        "files": count_py(tree),
        "apply_s": best(applied, 0),
        "apply_cpu_s": best(applied, 1),
        "baseline_s": best(baseline, 0),
        "baseline_cpu_s": best(baseline, 1),
        "ratio": best(applied, 0) / best(baseline, 0),
        "ratio_cpu": best(applied, 1) / best(baseline, 1),
        "noop_cli_s": best(noops, 0),
        "noop_cli_cpu_s": best(noops, 1),
        "noop_plan_s": plan_noop,
        "load_after": os.getloadavg()[0],
    }


def _in_process_noop(tree: Path) -> float:
    code = (
        "import time, pathlib\n"
        "from latentsync_mps.pack import ruleset\n"
        "from latentsync_mps.pack.paths import patches_dir\n"
        "from latentsync_mps.port.planning import make_plan\n"
        "pack = ruleset.load(patches_dir())\n"
        "started = time.perf_counter()\n"
        f"plan = make_plan(pathlib.Path({str(tree)!r}), pack)\n"
        "assert plan.unchanged and not plan.writes\n"
        "print(time.perf_counter() - started)\n"
    )
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def bench_scaling(work: Path, factors: list[int]) -> list[dict]:
    """Dry-run apply over growing copies of the fixture. Linear means a constant cost per added
    file (`added_file_ms`, between one size and the next); the time per file of the whole run
    falls as the fixed start-up is shared by more files."""
    rows = []
    for factor in factors:
        tree = build_tree(work / f"scale-{factor}", factor)
        seconds, cpu = timed([*LSYNC, "apply", str(tree), "--dry-run", "--json"])
        rows.append({"copies": factor, "files": count_py(tree), "seconds": seconds, "cpu_s": cpu})
    base = rows[0]["seconds"] / rows[0]["files"]
    for previous, row in zip([None, *rows], rows, strict=False):
        row["per_file_ms"] = 1000 * row["seconds"] / row["files"]
        row["vs_1x_per_file"] = row["per_file_ms"] / (1000 * base)
        if previous is not None:
            added = row["files"] - previous["files"]
            row["added_file_ms"] = 1000 * (row["seconds"] - previous["seconds"]) / added
            row["added_file_cpu_ms"] = 1000 * (row["cpu_s"] - previous["cpu_s"]) / added
    return rows


OVERHEAD = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)
from latentsync.models.unet import UNet3DConditionModel
unet, _ = UNet3DConditionModel.from_pretrained({"block_out_channels": [32, 64]}, "", device="cpu")
unet.eval()
sample = torch.randn(1, 13, 4, 16, 16)
context = torch.randn(1, 4, 5, 384)
mask = torch.rand(4, 1, 64, 64)
def step():
    with torch.no_grad():
        unet(sample, torch.tensor(500), encoder_hidden_states=context)
        torch.nn.functional.interpolate(mask, size=(8, 8))
for _ in range(5):
    step()
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter(); step(); times.append(time.perf_counter() - started)
print(sorted(times)[len(times) // 2])
"""


def bench_overhead(work: Path, rounds: int) -> dict:
    """The port's run-time cost where it is not needed: patched vs unpatched model code on CPU."""
    pristine = work / "overhead-pristine"
    patched = work / "overhead-patched"
    shutil.copytree(FIXTURE, pristine)
    shutil.copytree(FIXTURE, patched)
    subprocess.run([*LSYNC, "apply", str(patched)], check=True, capture_output=True)
    env = {**os.environ, "LATENTSYNC_DEVICE": "cpu"}
    medians = {"pristine": [], "patched": []}
    for _ in range(3):  # alternate, so that drift of the machine hits both alike
        for name, tree in (("pristine", pristine), ("patched", patched)):
            out = subprocess.run(
                [sys.executable, "-c", OVERHEAD, str(tree), str(rounds)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            medians[name].append(float(out))
    pristine_s, patched_s = statistics.median(medians["pristine"]), statistics.median(medians["patched"])
    return {"pristine_ms": 1000 * pristine_s, "patched_ms": 1000 * patched_s, "ratio": patched_s / pristine_s}


def bench_verify(rounds: int) -> dict:
    """verify on the ported fixture, cpu and mps-sim (scripts/bench_verify.py, one thread each so
    that a busy machine does not make torch's threads wait on each other)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_verify import bench_verify as measure

    # mps-sim twice: with a parity reference of its own (the goal's case: a user who runs only
    # mps-sim) and with the cpu verify's kept output (a verify run after a cpu verify of the same tree).
    fresh = measure(rounds=rounds, threads=1, fresh_reference=True)
    reused = measure(rounds=rounds, threads=1)
    results = {
        device: {
            "seconds": fresh[device]["median_s"],
            "cpu_s": fresh[device]["median_cpu_s"],
            "passed": fresh[device]["passed"],
        }
        for device in ("cpu", "mps-sim")
    }
    results["mps_sim_vs_cpu"] = fresh["ratio_median"]
    results["mps_sim_vs_cpu_in_cpu_time"] = fresh["ratio_cpu"]
    results["reused_reference"] = {
        "seconds": reused["mps-sim"]["median_s"],
        "cpu_s": reused["mps-sim"]["median_cpu_s"],
        "passed": reused["mps-sim"]["passed"],
        "mps_sim_vs_cpu_in_cpu_time": reused["ratio_cpu"],
    }
    return results


def bench_forecast(tree: Path, python: str, work: Path) -> dict:
    """`lsync-port forecast` of a ported copy of `tree` (5 configurations at the release's size):
    wall time, and the CPU time of the command and its child (on a busy machine wall time waits
    for other processes; CPU time is what the forecast itself costs)."""
    import resource

    copy = work / "forecast-tree"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    subprocess.run([*LSYNC, "apply", str(copy)], check=True, capture_output=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*LSYNC, "forecast", str(copy), "--python", python, "--json"], capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return {
        "tree": str(tree),
        "release": report.get("release"),
        "resolution": report.get("resolution"),
        "ok": done.returncode == 0,
        "wall_s": wall_s,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "configurations": len([c for c in report.get("configurations", []) if c.get("status") == "pass"]),
    }


def bench_cpu_parts(python: str, write: bool) -> int:
    """The CPU parts of a run, per frame, measured under `python` (scripts/bench_cpu_parts.py)."""
    script = Path(__file__).with_name("bench_cpu_parts.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([python, str(script)], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        print(result.stderr[-2000:])
        return 1
    measured = json.loads(result.stdout)
    parts = measured["parts"]
    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": machine().split(", torch ")[0],  # the parts ran under `python`, with `versions`
        "python": python,
        "versions": measured["versions"],
        "about": "seconds per video frame of the parts that run on a Mac's CPU too, measured by scripts/bench.py "
        "--only-cpu-parts (scripts/bench_cpu_parts.py); parts with counted = false are not in the estimate",
        "parts": parts,
    }
    for name, part in parts.items():
        print(f"{name:26} {part['per_frame_s'] * 1000:8.1f} ms/frame  {part['how']}")
    if write:
        target = REPO / "patches" / "cpu-measured.json"
        target.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
        print(f"wrote {target}")
    return 0


def bench_help() -> float:
    return wall([*LSYNC, "--help"], repeat=5)


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_verify import machine as facts

    m = facts()
    load = f", load {m['load_average_1min']:.1f}" if m["load_average_1min"] is not None else ""
    return f"{m['platform']}, {m['cores']} cores ({m['cpu']}{load}), Python {m['python']}, torch {m['torch']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree", type=Path, help="a LatentSync checkout for the apply figures (default: the fixture x5)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 50x")
    parser.add_argument("--write", action="store_true", help="record the figures in docs/benchmarks.md")
    parser.add_argument("--forecast-tree", type=Path, help="a LatentSync 1.6 checkout to time `forecast` on (a copy)")
    parser.add_argument("--forecast-python", default=sys.executable, help="the interpreter with that tree's stack")
    parser.add_argument("--only-forecast", action="store_true", help="measure the forecast alone")
    parser.add_argument(
        "--only-apply", action="store_true", help="measure apply, the no-op re-apply and the scaling alone"
    )
    parser.add_argument(
        "--only-cpu-parts",
        action="store_true",
        help="time the CPU parts per frame (scripts/bench_cpu_parts.py); with --write, keep them in "
        "patches/cpu-measured.json for forecast's estimate",
    )
    parser.add_argument("--cpu-python", default=sys.executable, help="the interpreter with the upstream stack")
    args = parser.parse_args()
    if args.only_cpu_parts:
        return bench_cpu_parts(args.cpu_python, args.write)
    if args.only_apply:
        with tempfile.TemporaryDirectory(prefix="lsync-bench-") as work_dir:
            work = Path(work_dir)
            tree = args.tree or build_tree(work / "sized", 5)
            figures = {"machine": machine(), "date": datetime.date.today().isoformat()}
            figures["apply"] = bench_apply(tree, work, repeat=1 if args.quick else 3)
            figures["apply"]["tree"] = str(args.tree) if args.tree else "fixture x5"
            figures["scaling"] = bench_scaling(work, [1, 5, 10] if args.quick else [1, 10, 50])
        print("\n".join(render_apply(figures)))
        print(json.dumps(figures, indent=2))
        return 0
    if args.only_forecast:
        if not args.forecast_tree:
            parser.error("--only-forecast needs --forecast-tree")
        with tempfile.TemporaryDirectory(prefix="lsync-bench-") as work_dir:
            figures = bench_forecast(args.forecast_tree, args.forecast_python, Path(work_dir))
        figures["machine"] = machine()
        print(render_forecast(figures))
        print(json.dumps(figures, indent=2))
        return 0 if figures["ok"] else 1
    results: dict = {"machine": machine(), "date": datetime.date.today().isoformat()}
    with tempfile.TemporaryDirectory(prefix="lsync-bench-") as work_dir:
        work = Path(work_dir)
        tree = args.tree or build_tree(work / "sized", 5)
        results["apply"] = bench_apply(tree, work, repeat=1 if args.quick else 3)
        results["apply"]["tree"] = str(args.tree) if args.tree else "fixture x5"
        results["scaling"] = bench_scaling(work, [1, 10] if args.quick else [1, 10, 50])
        results["overhead"] = bench_overhead(work, rounds=10 if args.quick else 30)
        results["verify"] = bench_verify(rounds=1 if args.quick else 3)
        results["help_s"] = bench_help()
        if args.forecast_tree:
            results["forecast"] = bench_forecast(args.forecast_tree, args.forecast_python, work)
    table = render(results)
    print(table)
    print(json.dumps(results, indent=2))
    if args.write:
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "benchmarks.md").write_text(table)
    return 0


def render_apply(r: dict) -> list[str]:
    """The table's apply, no-op and scaling rows (wall time, and CPU time beside it)."""
    a = r["apply"]
    mark = lambda ok: "meets" if ok else "MISSES"  # noqa: E731
    noop = a["noop_cli_s"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `scripts/bench.py` on {r['date']}: {r['machine']}; load {a['load_after']:.1f} after apply.",
        "",
        "| figure | measured | goal | |",
        "|---|---|---|---|",
        f"| apply ({a['tree']}, {a['files']} .py files) | {a['apply_s']:.2f} s wall, "
        f"{a['apply_cpu_s']:.2f} s CPU | | |",
        f"| baseline: parse + regenerate every .py with libcst | {a['baseline_s']:.2f} s wall, "
        f"{a['baseline_cpu_s']:.2f} s CPU | | |",
        f"| apply / baseline | {a['ratio']:.2f} wall, {a['ratio_cpu']:.2f} CPU | <= 0.6 | {mark(a['ratio'] <= 0.6)} |",
        f"| no-op re-apply, whole command | {noop:.2f} s wall, {a['noop_cli_cpu_s']:.2f} s CPU | <= 0.3 s "
        f"| {mark(noop <= 0.3)} |",
        f"| no-op re-apply, the plan alone | {a['noop_plan_s']:.3f} s | <= 0.3 s | {mark(a['noop_plan_s'] <= 0.3)} |",
    ]
    for row in r["scaling"]:
        added = f", {row['added_file_ms']:.0f} ms wall a file added" if "added_file_ms" in row else ""
        lines.append(
            f"| dry-run apply, fixture x{row['copies']} ({row['files']} files) | {row['seconds']:.2f} s "
            f"({row['per_file_ms']:.0f} ms a file, x{row['vs_1x_per_file']:.2f} of 1x{added}) | linear | |"
        )
    return lines


def render(r: dict) -> str:
    o, v = r["overhead"], r["verify"]
    mark = lambda ok: "meets" if ok else "MISSES"  # noqa: E731
    lines = render_apply(r)
    lines += [
        f"| run-time overhead on CPU (UNet forward + mask resize) | {o['patched_ms']:.1f} ms vs "
        f"{o['pristine_ms']:.1f} ms = {o['ratio']:.3f} | <= 1.03 | {mark(o['ratio'] <= 1.03)} |",
    ]
    for device in ("cpu", "mps-sim"):
        if device in v:
            seconds = v[device]["seconds"]
            lines.append(
                f"| verify on the fixture, {device} | {seconds:.1f} s wall, {v[device]['cpu_s']:.1f} s CPU "
                f"(passed: {v[device]['passed']}) | <= 30 s "
                f"| {mark(seconds <= 30)} |"
            )
    if "mps_sim_vs_cpu" in v:
        ratio, in_cpu = v["mps_sim_vs_cpu"], v["mps_sim_vs_cpu_in_cpu_time"]
        lines.append(
            f"| mps-sim / cpu verify (parity reference of its own) | {ratio:.2f} wall, {in_cpu:.2f} CPU time "
            f"| <= 2 | {mark(in_cpu <= 2)} |"
        )
    if "reused_reference" in v:
        kept = v["reused_reference"]
        lines.append(
            f"| verify on the fixture, mps-sim after a cpu verify (its output reused as the parity reference) "
            f"| {kept['seconds']:.1f} s wall, {kept['cpu_s']:.1f} s CPU (passed: {kept['passed']}; "
            f"{kept['mps_sim_vs_cpu_in_cpu_time']:.2f} of cpu in CPU time) | | |"
        )
    lines.append(f"| `lsync-port --help` start-up | {r['help_s']:.2f} s | <= 0.3 s | {mark(r['help_s'] <= 0.3)} |")
    if "forecast" in r:
        lines.append(render_forecast(r["forecast"]))
    return "\n".join(lines) + "\n"


def render_forecast(f: dict) -> str:
    """One table row: the forecast's wall time against the goal, with its CPU time."""
    verdict = "meets" if f["ok"] and f["wall_s"] <= 90 else "MISSES"
    return (
        f"| forecast, LatentSync {f['release']} ({f['resolution']}x{f['resolution']}, 16 frames, "
        f"{f['configurations']} configurations) | {f['wall_s']:.0f} s wall, {f['cpu_s']:.0f} s CPU | <= 90 s "
        f"| {verdict} |"
    )


if __name__ == "__main__":
    sys.exit(main())
