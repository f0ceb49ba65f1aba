#!/usr/bin/env python3
"""How often the MPS simulator's op-coverage verdict agrees with torch's own MPS expectations.

    python scripts/mps_sim_fidelity.py [--samples 3] [--timeout 20] [--ops add,logspace,...]
                                       [--json out.json] [--markdown docs/mps-sim-fidelity.md]

Runs PyTorch's own OpInfo samples (`torch.testing._internal.common_methods_invocations.op_db`),
float32 and float16, forward only, the first --samples of each op, through the simulator
(`latentsync_mps.payload.mpssim`), and compares each op x dtype verdict with what torch's MPS test
suite expects for that op x dtype in the installed release. Not part of CI (minutes, not seconds).

The simulator's verdict for an op x dtype: "fails" when running its samples on the simulated device
gave at least one error finding (no MPS kernel, float64 on the device, a CPU tensor mixed in, ...),
"runs" when it gave none. An exception that is no finding (the simulator could not simulate the
sample) is "crashed" and never agrees with anything.

Torch's expectation, as `test/test_mps.py` (TestConsistency.test_output_match, which runs every
OpInfo for the dtypes in `op.supported_dtypes("mps")` and compares with the CPU) derives it from
`torch/testing/_internal/common_mps.py:mps_ops_modifier` and the OpInfos' own decorators:

  fails    UNIMPLEMENTED_XFAILLIST ("Those ops are not expected to work": no MPS kernel, or not for
           that dtype), and ON_MPS_XFAILLIST entries other than argsort/sort (a missing downstream
           kernel, an exception). The test is expectedFailure and the failure is an error raised.
  wrong    UNDEFINED_XFAILLIST (random results, undefined behaviour, CPU-side differences) and
           ON_MPS_XFAILLIST's argsort/sort (unstable order of equal elements): the op *runs* on MPS
           and its result differs from the CPU's. For op coverage that is "runs".
  runs     a test torch runs and expects to pass.
  xfail    an expectedFailure from the OpInfo's own decorators (device_type="mps"): torch does not
           say whether it raises or gives a wrong result. Excluded from the denominator.
  skipped  SKIPLIST, EMPTY_OPS_SKIPLIST, a skip among the OpInfo's decorators: torch makes no claim.
           Excluded.
  untested the dtype is not in `op.supported_dtypes("mps")`: torch's suite has no such test.
           Excluded.

An op x dtype agrees when the simulator says "fails" and torch "fails", or the simulator says
"runs" and torch "runs" or "wrong". The agreement is over the op x dtype pairs whose expectation is
fails/wrong/runs and whose simulation finished (timeouts and ops whose samples are too large are
excluded too, and listed). Nothing here runs on MPS: both sides are read or simulated on this machine.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import datetime
import itertools
import json
import os
import platform
import signal
import sys
import time
import unittest
import warnings
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DTYPES = ("float32", "float16")
MAX_SAMPLE_ELEMENTS = 4_000_000  # larger samples are skipped: minutes of CPU on 2 cores, no new verdict
# ON_MPS_XFAILLIST mixes the two kinds; these entries are wrong results (torch's comments: "undefined
# behaviour", duplicate indices), the others raise.
ON_MPS_WRONG = frozenset({"argsort", "sort"})
EXCLUDED = ("xfail", "skipped", "untested")

# Why the simulator and torch disagree, for the disagreements a general rule does not explain
# (see `cause`), found by reading what each op dispatches. Keyed by OpInfo key (name + variant_test_name).
_SVD = (
    "`svdvals` taken for linalg_svd's CPU fallback",
    "`_linalg_svd` without U and V (svdvals and what calls it: cond, matrix_rank, nuclear and 2-norms) has no "
    "MPS kernel; `linalg_svd` has MPS's own CPU fallback. On a Linux build both reach the simulator as "
    "`_linalg_svd` (linalg_svd decomposes before dispatch), and for a tensor subclass torch forces "
    "compute_uv=True (`_may_require_fw_or_bw_grad`), so the calls look the same: the simulator judges both "
    "as the fallback (a warning). Not fixed: telling them apart needs the Python entry points intercepted",
)
_ADAPTIVE = (
    "An argument-dependent error (adaptive average pooling)",
    "MPS's adaptive average pooling raises when the input size is not divisible by the "
    "output size (torch's comment in common_mps.py); the kernel exists, and the simulator checks kernels, "
    "not arguments. Area interpolation is adaptive average pooling",
)
_INNER = (
    "An op inside a composite-explicit kernel",
    "the simulator computes a composite-explicit kernel on the CPU and sees only "
    "the op itself. logspace's Tensor overloads call the Scalar one (whose logspace.out has no MPS kernel); "
    "pinv(hermitian=True) calls eigh. The table catches this only through an out= or in-place sibling",
)
_NOT_VISIBLE = (
    "A failure no kernel table shows",
    "every aten op it reaches has an MPS kernel in this torch's tables; torch's failure is inside a kernel or "
    "in the comparison (svd_lowrank, probably: it draws random projections, which MPS and the CPU draw "
    "differently); no kernel table shows that",
)
# What this measurement found in the simulator and what was fixed (src/latentsync_mps/verify/mpssim/,
# tests/test_mps_sim_entry_points.py). Shown in the report.
FIXES = (
    "`Tensor.to(..., copy=True)`, by keyword or positional, crashed the simulator (`torch._C._nn._parse_to` "
    "takes no `copy`); it is simulated (`to`: now fails as torch expects, on its float64 samples).",
    "`torch.nonzero` and `Tensor.nonzero` crashed: a hand-written binding with a device guard, reached before "
    "any dispatch; now computed through their aten ops on the simulated device (`nonzero`: runs).",
    "`put` ran without a finding: its composite kernel calls `put_`, which has no MPS kernel. A "
    "composite-explicit functional op whose in-place variant has no MPS kernel is now an error (`put`: fails).",
    "`linalg.lu_solve` and `lu_solve` were false errors: torch (2.10 and later) registers the MPS kernel of "
    "`linalg_lu_solve.out` from Python (`torch/_refs/linalg`), which no yaml lists; the table now also asks "
    "the dispatcher (both: run).",
)
EXPLANATIONS: dict[str, tuple[str, str]] = {
    "linalg.svdvals": _SVD,
    "linalg.cond": _SVD,
    "linalg.matrix_rank": _SVD,
    "normnuc": _SVD,
    "linalg.norm": _SVD,
    "linalg.matrix_norm": _SVD,
    "linalg.normsubgradients_at_zero": _SVD,
    "nn.functional.adaptive_avg_pool1d": _ADAPTIVE,
    "nn.functional.adaptive_avg_pool2d": _ADAPTIVE,
    "nn.functional.interpolatearea": _ADAPTIVE,
    "logspacetensor_overload": _INNER,
    "linalg.pinvhermitian": _INNER,
    "masked.median": _NOT_VISIBLE,
    "svd_lowrank": _NOT_VISIBLE,
    "__getitem__": (
        "An unbound `Tensor.__getitem__` call",
        "the OpInfo calls `torch.Tensor.__getitem__(x, index)` unbound, which skips the simulated tensor's own "
        "`__getitem__` and reaches C++ indexing, whose device guard a Linux build cannot pass. `x[index]`, "
        "as code writes it, is simulated (tests/test_mps_sim.py)",
    ),
    "resize_": (
        "`resize_` of a simulated tensor",
        "the simulator cannot resize a wrapper tensor in place (the meta-tensor trick it uses for in-place "
        "view ops trips an assert in Resize.cpp); verify would show this as a crash, not as a finding",
    ),
    "nn.functional.grid_sample": (
        "A mode gap of one MPS kernel (grid_sample)",
        'torch 2.15 lists grid_sample float32 as unimplemented for one mode: "No 5-D bicubic sampler on MPS" '
        "(its comment in common_mps.py); grid_sampler_3d has an MPS kernel for the other modes, and the "
        "simulator checks kernels, not modes. verify folds that entry into grid_sampler_3d only, not the 2-D "
        "sampler (target_torch.OPINFO_ATEN_BY_RELEASE)",
    ),
    "stft": (
        "No float16 FFT on the CPU",
        "the CPU has no float16 FFT (MKL), and the simulator computes in float32 only for ops whose CPU "
        "error says \"not implemented for 'Half'\"; torch expects a failure too (a dtype gap on MPS)",
    ),
}


# ----------------------------------------------------------------------------------------------
# Torch's expectations


def common_mps_path() -> Path:
    import torch.testing._internal as internal

    return Path(internal.__file__).parent / "common_mps.py"


def load_expectations(path: Path | None = None) -> dict[str, dict[str, list[str] | None]]:
    """The lists that `mps_ops_modifier` builds, read from the source without running it (it is only
    defined when MPS is available): {list name: {op key: dtype names, or None for every dtype}}."""
    path = path or common_mps_path()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "mps_ops_modifier":
            lists = {}
            for statement in ast.walk(node):
                target, value = None, None
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target, value = statement.targets[0], statement.value
                elif isinstance(statement, ast.AnnAssign):
                    target, value = statement.target, statement.value
                if isinstance(target, ast.Name) and isinstance(value, ast.Dict) and target.id.isupper():
                    lists[target.id] = _literal_lists(value)
            if "UNIMPLEMENTED_XFAILLIST" in lists:
                return lists
    raise SystemExit(f"error: {path} has no mps_ops_modifier with UNIMPLEMENTED_XFAILLIST (an older torch?)")


def _literal_lists(node: ast.Dict) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if not isinstance(key, ast.Constant):
            continue
        if isinstance(value, ast.Constant) and value.value is None:
            out[key.value] = None
        elif isinstance(value, (ast.List, ast.Tuple, ast.Set)):
            out[key.value] = [e.attr for e in value.elts if isinstance(e, ast.Attribute)]
    return out


def _listed(table: dict, key: str, dtype: str) -> bool:
    return key in table and (table[key] is None or dtype in table[key])


class _ProbeCase:
    """What a decorated test method sees as `self` in test_mps.py's instantiated TestConsistencyMPS."""

    device_type = "mps"
    precision = 0
    rel_tol = 0


def _kind(decorator) -> str | None:
    """Whether a test decorator makes test_output_match an expected failure or a skip on MPS: found by
    applying it to a probe method and calling that as the MPS test class would (skipIf, onlyOn,
    onlyNativeDeviceTypes, unittest.skip... each decide at call time or mark the function)."""

    def probe(self):
        return "ran"

    try:
        wrapped = decorator(probe)
    except Exception:  # noqa: BLE001 - a decorator that needs a real test: neither kind
        return None
    if getattr(wrapped, "__unittest_expecting_failure__", False):
        return "xfail"
    if getattr(wrapped, "__unittest_skip__", False):
        return "skip"
    try:
        wrapped(_ProbeCase())
    except unittest.SkipTest:
        return "skip"
    except Exception:  # noqa: BLE001
        return None
    return None


def expected(op, dtype: str, lists: dict) -> tuple[str, str]:
    """Torch's expectation for one op x dtype on MPS, and where it comes from."""
    import torch

    key = op.name + op.variant_test_name
    torch_dtype = getattr(torch, dtype)
    if torch_dtype not in op.supported_dtypes("mps"):
        return "untested", "not in the op's MPS dtypes"
    for name in ("SKIPLIST", "EMPTY_OPS_SKIPLIST"):
        if _listed(lists.get(name, {}), key, dtype):
            return "skipped", name
    decorators = op.get_decorators("TestConsistency", "test_output_match", "mps", torch_dtype, {})
    kinds = {_kind(d) for d in decorators}
    if "skip" in kinds:
        return "skipped", "OpInfo skip decorator"
    if _listed(lists.get("UNIMPLEMENTED_XFAILLIST", {}), key, dtype):
        per_dtype = lists["UNIMPLEMENTED_XFAILLIST"][key] is not None
        return "fails", "UNIMPLEMENTED_XFAILLIST" + (" (dtype)" if per_dtype else "")
    on_mps = lists.get("ON_MPS_XFAILLIST", {})
    if _listed(on_mps, key, dtype):
        return ("wrong" if key in ON_MPS_WRONG else "fails"), "ON_MPS_XFAILLIST"
    if _listed(lists.get("UNDEFINED_XFAILLIST", {}), key, dtype):
        return "wrong", "UNDEFINED_XFAILLIST"
    if "xfail" in kinds:
        return "xfail", "OpInfo expectedFailure decorator"
    return "runs", "expected to pass"


def agrees(expectation: str, verdict: str) -> bool | None:
    """True/False, or None when the pair is outside the denominator."""
    if expectation in EXCLUDED or verdict in ("timeout", "too-large"):
        return None
    if verdict == "crashed":
        return False
    return (verdict == "fails") == (expectation == "fails")


# ----------------------------------------------------------------------------------------------
# The simulator's verdict


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def _elements(value) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_elements(v) for v in value)
    if isinstance(value, dict):
        return sum(_elements(v) for v in value.values())
    return 0


def simulate(op, dtype: str, simulator, samples: int, timeout: float) -> dict:
    """Run the op's first `samples` OpInfo samples, made on the simulated device as test_mps.py makes
    them, and return the verdict with the error findings that decided it."""
    import torch

    simulator.findings.clear()
    torch_dtype = getattr(torch, dtype)
    ran, large = 0, 0
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generated = op.sample_inputs("mps", torch_dtype, requires_grad=False)
            for sample in itertools.islice(generated, samples):
                if _elements((sample.input, sample.args, sample.kwargs)) > MAX_SAMPLE_ELEMENTS:
                    large += 1
                    continue
                op(sample.input, *sample.args, **sample.kwargs)
                ran += 1
    except _Timeout:
        return {"verdict": "timeout", "detail": f"over {timeout:g} s", "findings": _errors(simulator)}
    except Exception as error:  # noqa: BLE001 - an op may raise anything; that is the finding here
        errors = _errors(simulator)
        if errors:  # the simulator recorded the defect before the CPU computation gave up too
            return {"verdict": "fails", "detail": f"{type(error).__name__} after the findings", "findings": errors}
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        return {"verdict": "crashed", "detail": f"{type(error).__name__}: {message}", "findings": []}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if ran == 0 and large:
        return {"verdict": "too-large", "detail": f"{large} sample(s) over {MAX_SAMPLE_ELEMENTS} elements"}
    errors = _errors(simulator)
    return {"verdict": "fails" if errors else "runs", "detail": f"{ran} sample(s)", "findings": errors}


def _errors(simulator) -> list[dict]:
    return [
        {"kind": f["kind"], "op": f["op"], "summary": f.get("summary", f["message"][:120])}
        for f in simulator.report()
        if f["level"] == "error"
    ]


# ----------------------------------------------------------------------------------------------
# The run


def op_db_for_mps():
    """op_db as test_mps.py uses it: plus `_upsample_bicubic2d_aa`, a copy of the bilinear one."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    ops = list(op_db)
    for op in op_db:
        if op.name == "_upsample_bilinear2d_aa":
            extra = copy.copy(op)
            extra.name = "_upsample_bicubic2d_aa"
            extra.op = torch.ops.aten._upsample_bicubic2d_aa
            ops.append(extra)
            break
    return ops


def cause(row: dict) -> tuple[str, str]:
    """The group a disagreement belongs to in the report: a title and the explanation."""
    key = row["op"]
    if key in EXPLANATIONS:
        return EXPLANATIONS[key]
    if row["verdict"] == "crashed":
        return ("A simulator crash", "the simulator could not run the sample (an exception that is no finding)")
    if row["verdict"] == "runs" and row["source"].endswith("(dtype)"):
        return (
            "A dtype gap of one MPS kernel",
            "the kernel exists but rejects this dtype (or dtype combination). The simulator judges op coverage "
            "only (see its docstring); folding torch's per-dtype expectations in is issue 11 part 2",
        )
    if row["verdict"] == "runs":
        return ("Not yet explained", "torch expects a failure that the simulator does not see")
    return ("Not yet explained", "the simulator reports an error where torch expects the op to run")


def mac_table(version: str, folder: Path) -> tuple[Path, str]:
    """The MPS table lsync-port ships for the installed release (derived from its macOS arm64 wheel), as
    the JSON file the simulator reads, and its source. Op coverage only: torch's dtype expectations and the
    numerics defects are left out (folding the expectations in would make the comparison circular)."""
    from latentsync_mps.pack import target_torch

    if version not in target_torch.known_versions():
        raise SystemExit(
            f"error: lsync-port ships no MPS table for torch {version} (the installed one); "
            "--table installed judges by this torch's own yaml"
        )
    table = {**target_torch.table_for(version), "dtype_rules": {}, "defects": []}
    path = folder / f"mps-table-{version}.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    return path, table["source"]


def run(keys: set[str] | None, samples: int, timeout: float, progress: bool = True, table: str = "mac") -> dict:
    import tempfile

    import torch

    lists = load_expectations()
    from latentsync_mps.payload import mpssim as mps_sim

    version = torch.__version__.split("+")[0]
    table_path, table_source = None, f"the installed torch {torch.__version__}'s own native_functions.yaml"
    if table == "mac":
        table_path, table_source = mac_table(version, Path(tempfile.mkdtemp(prefix="fidelity-")))
    # Installed before op_db is imported, as on a Mac where MPS is there when the test suite loads, and
    # as verify installs it before the tree's imports: the OpInfos then hold the simulator's torch.nonzero,
    # torch.tensor... Findings are attributed to this script (the "tree").
    simulator = mps_sim.install(Path(__file__).resolve().parent, table=table_path)
    ops = op_db_for_mps()
    if keys is not None:
        unknown = keys - {op.name + op.variant_test_name for op in ops}
        if unknown:
            raise SystemExit(f"error: not in op_db: {', '.join(sorted(unknown))}")
        ops = [op for op in ops if op.name + op.variant_test_name in keys]
    started = time.monotonic()
    rows = compare(ops, lists, simulator, samples, timeout, progress)
    result = summarize(rows, samples, timeout, time.monotonic() - started, torch.__version__)
    result["table"] = table_source
    result["macos"] = simulator.stats()["macos"]
    return result


def compare(ops, lists: dict, simulator, samples: int, timeout: float, progress: bool = False) -> list[dict]:
    """One row per op x dtype: torch's expectation, the simulator's verdict, and whether they agree."""
    rows = []
    started = time.monotonic()
    for index, op in enumerate(ops):
        key = op.name + op.variant_test_name
        for dtype in DTYPES:
            expectation, source = expected(op, dtype, lists)
            if expectation == "untested":
                result = {"verdict": "not run", "detail": "", "findings": []}
            else:
                t0 = time.monotonic()
                result = simulate(op, dtype, simulator, samples, timeout)
                result["seconds"] = round(time.monotonic() - t0, 2)
            rows.append({"op": key, "dtype": dtype, "expected": expectation, "source": source, **result})
            rows[-1]["agrees"] = agrees(expectation, result["verdict"])
        if progress and index % 50 == 0:
            print(f"  {index}/{len(ops)} ops, {time.monotonic() - started:.0f} s", file=sys.stderr)
    return rows


def summarize(rows: list[dict], samples: int, timeout: float, seconds: float, torch_version: str) -> dict:
    counted = [r for r in rows if r["agrees"] is not None]
    agreed = sum(1 for r in counted if r["agrees"])
    disagreements = [dict(r, cause=cause(r)[0], explanation=cause(r)[1]) for r in counted if not r["agrees"]]
    matrix = Counter((r["expected"], r["verdict"]) for r in rows)
    return {
        "torch": torch_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "samples_per_op": samples,
        "timeout_s": timeout,
        "seconds": round(seconds, 1),
        "ops": len({r["op"] for r in rows}),
        "pairs": len(rows),
        "counted": len(counted),
        "agreed": agreed,
        "agreement_percent": round(100.0 * agreed / len(counted), 2) if counted else None,
        "folded_in": folded_in(rows),
        "excluded": dict(
            Counter(r["expected"] if r["expected"] in EXCLUDED else r["verdict"] for r in rows if r["agrees"] is None)
        ),
        "matrix": {f"{e} / {v}": n for (e, v), n in sorted(matrix.items())},
        "disagreements": disagreements,
        "excluded_runs": [r for r in rows if r["verdict"] in ("timeout", "too-large")],
        "rows": rows,
    }


def folded_in(rows: list[dict]) -> dict:
    """Agreement if the dtype-specific UNIMPLEMENTED entries were error findings of the simulator (what
    issue 11 part 2 adds). Circular for those entries (the reference is then its own input): it shows
    what remains once they are in, not the simulator's own judgement."""
    counted = [r for r in rows if r["agrees"] is not None]
    agreed = 0
    for r in counted:
        verdict = "fails" if r["source"] == "UNIMPLEMENTED_XFAILLIST (dtype)" else r["verdict"]
        agreed += agrees(r["expected"], verdict) is True
    return {
        "agreed": agreed,
        "counted": len(counted),
        "agreement_percent": round(100.0 * agreed / len(counted), 2) if counted else None,
    }


# ----------------------------------------------------------------------------------------------
# The report


def markdown(result: dict) -> str:
    lines = [
        "# MPS simulator fidelity, measured",
        "",
        "Generated by `scripts/mps_sim_fidelity.py`; do not edit by hand. Nothing here ran on MPS: torch's",
        "expectations are read from the installed torch's `common_mps.py`, the verdicts are the simulator's.",
        "",
        f"**Agreement: {result['agreement_percent']}%** ({result['agreed']} of {result['counted']} op x dtype pairs)",
        f"between the simulator's op-coverage verdict and torch {result['torch']}'s own MPS expectations.",
        "",
        f"- the simulator judged by the MPS table of {result.get('table', 'the installed torch')}, on a "
        f"simulated macOS {result.get('macos', '15.0')}",
        f"- torch {result['torch']}, {result['date']}, {result['machine']}, {result['seconds']} s",
        f"- {result['ops']} OpInfos (op_db, plus test_mps.py's `_upsample_bicubic2d_aa`), float32 and float16,",
        f"  forward only, the first {result['samples_per_op']} samples of each, "
        f"{result['timeout_s']:g} s at most per op x dtype",
        f"- {result['pairs']} pairs; {result['counted']} counted; excluded: "
        + ", ".join(f"{n} {k}" for k, n in sorted(result["excluded"].items())),
        "- If the dtype-specific `UNIMPLEMENTED_XFAILLIST` entries were folded into the simulator (issue 11",
        f"  part 2; circular for those entries, so an upper bound): {result['folded_in']['agreement_percent']}%",
        f"  ({result['folded_in']['agreed']} of {result['folded_in']['counted']})",
        "",
        "## What counts",
        "",
        "Simulator: **fails** when the samples gave an error finding (no MPS kernel, float64 on the device,",
        "a CPU tensor mixed in), **runs** when none; **crashed** (an exception that is no finding) never",
        "agrees. Torch (`mps_ops_modifier` in `common_mps.py`, as test_mps.py's TestConsistency applies it):",
        "",
        "| torch's expectation | from | counts as |",
        "|---|---|---|",
        "| fails | `UNIMPLEMENTED_XFAILLIST`; `ON_MPS_XFAILLIST` except argsort/sort | fails |",
        "| wrong | `UNDEFINED_XFAILLIST`; `ON_MPS_XFAILLIST` argsort/sort | runs (a wrong result is not an error) |",
        "| runs | a test torch runs and expects to pass | runs |",
        "| xfail | an OpInfo's own `expectedFailure` for mps (raise or wrong result: not said) | excluded |",
        "| skipped | `SKIPLIST`, `EMPTY_OPS_SKIPLIST`, an OpInfo skip | excluded |",
        '| untested | dtype not in `op.supported_dtypes("mps")`: no such test in torch\'s suite | excluded |',
        "",
        "Timeouts and ops whose samples are too large to run here are excluded too (listed below).",
        "",
        "| expected / verdict | pairs |",
        "|---|---|",
    ]
    lines += [f"| {k} | {n} |" for k, n in result["matrix"].items()]
    untested = Counter(r["dtype"] for r in result["rows"] if r["expected"] == "untested")
    hidden = sorted({r["op"] for r in result["rows"] if r["expected"] in EXCLUDED and r["verdict"] == "crashed"})
    lines += [
        "",
        f"Untested pairs by dtype: {', '.join(f'{n} {d}' for d, n in sorted(untested.items()))} (the OpInfo's "
        "MPS dtypes leave them out). Among excluded pairs the simulator crashed on: "
        + (", ".join(f"`{k}`" for k in hidden) or "none")
        + " (not counted either way).",
        "",
        "## Simulator fixes this measurement led to",
        "",
    ]
    lines += [f"{i}. {text}" for i, text in enumerate(FIXES, start=1)]
    lines += [
        "",
        "## What the figure does not say",
        "",
        "- It measures op coverage only: whether an op x dtype raises on MPS, not whether its numbers are right",
        "  (torch's `UNDEFINED_XFAILLIST` wrong results count as runs) and not memory or speed.",
        "- Forward only, the first samples of each OpInfo: a failure that only a later sample triggers",
        "  (an argument-dependent error) is not seen here, while torch's suite, which runs every sample, has it.",
        "- torch's side is what `common_mps.py` and the OpInfo decorators declare for this release, read as",
        "  test_mps.py applies them (test_mps.py itself is not in the wheel). OpInfo `active_if` conditions",
        "  are evaluated on this Linux machine, and macOS-version lists (`MACOS_BEFORE_14_4_XFAILLIST`) do not",
        "  touch float32/float16. Torch's lists can be stale themselves; a disagreement is not always the",
        "  simulator's fault.",
        "",
    ]
    lines += [f"## Disagreements ({len(result['disagreements'])}), by cause", ""]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in result["disagreements"]:
        groups[(row["cause"], row["explanation"])].append(row)
    for number, ((title, text), rows) in enumerate(sorted(groups.items(), key=lambda item: -len(item[1])), 1):
        plural = "s" if len(rows) > 1 else ""
        lines += [f"### {number}. {title} ({len(rows)} pair{plural})", ""]
        lines += [text[0].upper() + text[1:] + ".", ""]
        for r in sorted(rows, key=lambda r: (r["op"], r["dtype"])):
            found = "; ".join(f"{f['op']} ({f['kind']})" for f in r.get("findings") or [])
            lines.append(
                f"- `{r['op']}` {r['dtype']}: torch {r['expected']} ({r['source']}), simulator {r['verdict']}"
                + (f": {found}" if found else (f": {r['detail']}" if r["verdict"] == "crashed" else ""))
            )
        lines.append("")
    if result["excluded_runs"]:
        lines += ["## Not simulated: timeouts and samples too large", ""]
        lines += [f"- `{r['op']}` {r['dtype']}: {r['verdict']} ({r['detail']})" for r in result["excluded_runs"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run torch's own OpInfo samples (op_db; float32 and float16, forward only) through the MPS "
        "simulator and compare each op x dtype verdict (an error finding: fails; none: runs) with what the "
        "installed torch's MPS test suite expects (torch/testing/_internal/common_mps.py). Prints the agreement; "
        "--json and --markdown write every pair and the disagreements. Not CI: a few minutes on 2 cores. "
        "What counts and what is left out of the denominator: docs/mps-sim-fidelity.md. Needs expecttest "
        "(torch.testing._internal imports it).",
        epilog="Example: python scripts/mps_sim_fidelity.py --json /tmp/fidelity.json "
        "--markdown docs/mps-sim-fidelity.md",
    )
    parser.add_argument("--samples", type=int, default=3, help="samples per op x dtype (default 3)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds per op x dtype before it counts as a timeout, left out (default 20)",
    )
    parser.add_argument("--ops", help="comma-separated OpInfo keys (name + variant, e.g. add,logspace)")
    parser.add_argument("--json", type=Path, help="write the figures and every disagreement as JSON")
    parser.add_argument("--markdown", type=Path, help="write the report (docs/mps-sim-fidelity.md)")
    parser.add_argument(
        "--table",
        choices=("mac", "installed"),
        default="mac",
        help="mac (default): the table lsync-port ships for the installed release, derived from its macOS "
        "arm64 wheel; installed: the one this torch's own yaml gives (the same ops where the yaml is the same)",
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.timeout <= 0:
        parser.error("--samples must be >= 1 and --timeout > 0")
    try:
        import expecttest  # noqa: F401 - torch.testing._internal needs it
        import torch  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as error:
        print(f"error: {error.name} is not installed (pip install expecttest pyyaml, and torch)", file=sys.stderr)
        return 2
    keys = {k.strip() for k in args.ops.split(",") if k.strip()} if args.ops else None
    result = run(keys, args.samples, args.timeout, table=args.table)
    print(
        f"agreement {result['agreement_percent']}% ({result['agreed']}/{result['counted']} op x dtype pairs, "
        f"torch {result['torch']}; excluded {sum(result['excluded'].values())}); "
        f"{len(result['disagreements'])} disagreements; {result['seconds']} s"
    )
    if args.json:
        with contextlib.suppress(FileExistsError):
            args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
