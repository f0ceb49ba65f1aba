#!/usr/bin/env python3
"""What `lsync-port verify --device mps-sim` costs next to a plain `--device cpu` verify (issue 5:
goal mps-sim <= 2x cpu), on the same ported tree (the fixture by default).

    python scripts/bench_verify.py [--tree /path/to/ported/LatentSync] [--rounds 3] [--threads N]
                                   [--python PATH] [--json] [--max-ratio 2] [--no-warm] [--fresh-reference]

Each round runs both commands, one after the other, each as a fresh `lsync-port verify` process
(the parent, the child, its imports, everything a user waits for). The synthetic checkpoints and
the MPS support table are built once before timing. The rounds alternate the two devices so that
a change in the machine's load hits both alike; the figure is the ratio of the medians (the ratio
of the best times is printed too). Each run's CPU time (user+sys of the verify process and its
child) and the load average after it are recorded beside its wall time: on a machine shared with
other work, wall time mostly measures the others, and the CPU-time ratio is the steadier figure.
Exit 1 when --max-ratio is given and exceeded (medians of wall time).

The mps-sim runs' parity check reuses the cpu runs' output as its CPU float32 reference (the same
tree and inputs: verify keeps it), and the figures say so (`parity_reference`: reused); with
--fresh-reference each mps-sim run computes its reference again, the cost of an mps-sim verify with
no cpu verify before it.

On a machine shared with other work, torch's worker threads wait on each other whenever a core is
taken (a 2-core machine with a load of 3 makes both runs 2-3x slower, and erratically so):
`--threads 1` (OMP_NUM_THREADS for both) measures the two alike without that noise.

`bench_verify(tree, rounds)` returns the same figures as a dict, for other benchmark scripts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
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
DEVICES = ("cpu", "mps-sim")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        import torch

        torch_version = torch.__version__
        threads = torch.get_num_threads()
    except ImportError:
        torch_version, threads = None, None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": load,
        "python": platform.python_version(),
        "torch": torch_version,
        "torch_threads": threads,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _verify(tree: Path, device: str, extra: list[str], env: dict | None = None) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of the command and its child, the JSON report)."""
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(
        [*LSYNC, "verify", str(tree), "--device", device, "--json", *extra], capture_output=True, text=True, env=env
    )
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        message = f"verify --device {device} printed no report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        raise SystemExit(message) from None
    return seconds, cpu, report


def bench_verify(
    tree: Path | None = None,
    rounds: int = 3,
    extra: list[str] | None = None,
    threads: int | None = None,
    warm: bool = True,
    fresh_reference: bool = False,
) -> dict:
    """Median and best wall times of `verify --device cpu` and `--device mps-sim`, and their ratio."""
    extra = extra or []
    extras = {"cpu": extra, "mps-sim": [*extra, "--fresh-reference"] if fresh_reference else extra}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with tempfile.TemporaryDirectory(prefix="lsync-bench-verify-") as work:
        if tree is None:
            tree = Path(work) / "latentsync"
            shutil.copytree(FIXTURE, tree)
            subprocess.run([*LSYNC, "apply", str(tree)], check=True, capture_output=True)
        for device in DEVICES if warm else ():  # warm: synthetic checkpoints, MPS support table, file caches
            _verify(tree, device, extras[device], env)
        times: dict[str, list[float]] = {device: [] for device in DEVICES}
        cpu_times: dict[str, list[float]] = {device: [] for device in DEVICES}
        loads: dict[str, list[float]] = {device: [] for device in DEVICES}
        reports: dict[str, dict] = {}
        for index in range(rounds):
            order = DEVICES if index % 2 == 0 else DEVICES[::-1]
            for device in order:
                seconds, cpu, report = _verify(tree, device, extras[device], env)
                times[device].append(seconds)
                cpu_times[device].append(cpu)
                loads[device].append(round(os.getloadavg()[0], 2))
                reports[device] = report
    result: dict = {"machine": machine(), "tree": str(tree), "rounds": rounds, "threads": threads or "default"}
    for device in DEVICES:
        checks = {c["name"]: round(c["seconds"], 2) for c in reports[device]["checks"]}
        result[device] = {
            "median_s": statistics.median(times[device]),
            "best_s": min(times[device]),
            "all_s": [round(t, 2) for t in times[device]],
            "median_cpu_s": statistics.median(cpu_times[device]),
            "all_cpu_s": [round(t, 2) for t in cpu_times[device]],
            "load_after": loads[device],
            "passed": reports[device]["passed"],
            "reason": reports[device]["reason"],
            "checks_s": checks,
        }
    result["mps-sim"]["ops"] = reports["mps-sim"].get("simulator", {}).get("ops")
    parity = next((c for c in reports["mps-sim"]["checks"] if c["name"] == "parity"), {})
    result["mps-sim"]["parity_reference"] = (parity.get("data") or {}).get("reference")
    result["ratio_median"] = result["mps-sim"]["median_s"] / result["cpu"]["median_s"]
    result["ratio_best"] = result["mps-sim"]["best_s"] / result["cpu"]["best_s"]
    result["ratio_cpu"] = result["mps-sim"]["median_cpu_s"] / result["cpu"]["median_cpu_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="a ported tree (default: a fresh copy of the fixture, ported)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", help="passed to verify --python (the tree's interpreter)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both runs (steadier on a busy machine)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--max-ratio", type=float, help="exit 1 when mps-sim / cpu (medians) exceeds it")
    parser.add_argument(
        "--no-warm", action="store_true", help="no untimed first runs (an earlier verify of the tree built its caches)"
    )
    parser.add_argument(
        "--fresh-reference",
        action="store_true",
        help="mps-sim runs compute their parity reference again instead of reusing the cpu runs' output",
    )
    args = parser.parse_args(argv)
    extra = ["--python", args.python] if args.python else []
    result = bench_verify(
        args.tree, args.rounds, extra, args.threads, warm=not args.no_warm, fresh_reference=args.fresh_reference
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(f"{m['date']} · {m['cpu']} · {m['cores']} cores · load {m['load_average_1min']:.2f} · {m['platform']}")
        threads = result["threads"] if args.threads else f"{m['torch_threads']} (default)"
        print(f"python {m['python']} · torch {m['torch']} · threads {threads} · {result['rounds']} rounds")
        for device in DEVICES:
            r = result[device]
            print(
                f"verify --device {device:8s} median {r['median_s']:6.2f} s  best {r['best_s']:6.2f} s  "
                f"runs {r['all_s']}  CPU {r['all_cpu_s']}  load after {r['load_after']}  passed: {r['passed']}"
            )
            print(f"    per check: {r['checks_s']}")
        print(
            f"mps-sim / cpu: {result['ratio_median']:.2f} (medians), {result['ratio_best']:.2f} (best times), "
            f"{result['ratio_cpu']:.2f} (CPU time); goal <= 2; {result['mps-sim']['ops']} device ops simulated; "
            f"parity reference: {result['mps-sim']['parity_reference']}"
        )
    if args.max_ratio is not None and result["ratio_median"] > args.max_ratio:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
