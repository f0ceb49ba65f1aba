"""Doctor checks of memory (against the forecast or upstream's figures) and of the environment
variables that change how the port runs on MPS."""

from __future__ import annotations

import math
from typing import Any

from latentsync_mps.features.doctor import catalog
from latentsync_mps.features.doctor.facts import ProbeFacts, reads_facts, size, value
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING, Check


def _watermark(env: dict[str, Any]) -> float | None:
    """PYTORCH_MPS_HIGH_WATERMARK_RATIO as a number (0 means no cap); None when unset or not a number."""
    text = env.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    if text is None:
        return catalog.MPS_DEFAULT_HIGH_WATERMARK
    try:
        ratio = float(text)
    except ValueError:
        return None
    return ratio if ratio >= 0 else None


def _chunking(facts: ProbeFacts) -> bool:
    """Whether the port's attention/VAE chunking will run on mps: the tree is ported (or no tree
    was given: doctor then speaks of the port) and LATENTSYNC_MPS_CHUNKING does not turn it off."""
    tree = facts.raw.get("tree") or {}
    ported = not tree or bool((tree.get("status") or {}).get("patched"))
    mode = str(facts.section("probe", "env").get("LATENTSYNC_MPS_CHUNKING") or "1").strip().lower()
    return ported and mode not in ("0", "false", "no", "off")


def forecast_row(facts: ProbeFacts | dict[str, Any], kind: str, res: int) -> tuple[dict, str] | None:
    """The forecast configuration that matches how the tree will run here (device, the helper's
    dtype, chunking), with a few words on where the figure comes from; None when the forecast
    has no such row or was made at another resolution."""
    from latentsync_mps.pack.forecast_tables import pick

    facts = ProbeFacts.parse(facts)

    forecast = facts.raw.get("forecast") or {}
    if kind not in ("mps", "cuda") or not forecast.get("configurations") or forecast.get("resolution") != res:
        return None
    dtype = facts.section("probe", "helper").get("dtype") or "float16"
    chunking = _chunking(facts)
    row = pick(forecast, kind, dtype, chunking)
    if row is None:
        return None
    how = f"{kind} {row['dtype']}" + (f", chunking {'on' if chunking else 'off'}" if kind == "mps" else "")
    where = (
        "live `lsync-port forecast` of this tree"
        if forecast.get("source") == "live"
        else f"forecast of LatentSync {forecast.get('release')} shipped with lsync-port (torch {forecast.get('torch')})"
    )
    return row, f"{how}; {where}"


def speed_phrase(facts: ProbeFacts, row: dict | None) -> str:
    """ "about N s per 16-frame chunk on this Mac (Apple M3 Pro, ...)", from the forecast row's counted
    work and this Mac's chip (pack/apple_chips.py); on another machine, says which chip it would use."""
    from latentsync_mps.pack.apple_chips import (
        ChipError,
        chunk_estimate,
        find_chip,
        load_chips,
    )
    from latentsync_mps.pack.forecast_tables import load_cpu_parts

    if not row or not row.get("work") or row.get("device") != "mps":
        return ""
    brand = facts.section("probe", "platform").get("chip")
    if not brand:
        return (
            "; time per chunk: no Apple chip detected here, so no estimate for this machine "
            "(`lsync-port forecast TREE --chip 'M3 Pro'` gives one for any chip)"
        )
    try:
        chip = find_chip(str(brand), load_chips())
    except ChipError as error:
        return f"; time per chunk: {error}"
    frames = (facts.raw.get("forecast") or {}).get("frames") or 16
    estimate = chunk_estimate(row["work"], chip, row["dtype"], frames, load_cpu_parts())
    return (
        f"; about {estimate['seconds']:.0f} s per {frames}-frame chunk on this Mac ({chip.name}; "
        "a roofline estimate: every kernel at the chip's peak, so expect a real run to be several times "
        "slower; docs/benchmarks.md)"
    )


@reads_facts
def check_memory(facts: ProbeFacts) -> Check:
    mem = facts.section("probe", "memory")
    total, cgroup = mem.get("total"), mem.get("cgroup_limit")
    resolution = facts.raw.get("resolution") or {}
    res = int(resolution.get("value") or 512)
    kind = facts.helper_device.split(":", 1)[0]
    env = facts.section("probe", "env")
    forecast = forecast_row(facts, kind, res)
    if forecast is not None:
        # The forecast counts the tensors of one 16-frame chunk and the weights; the allocator's
        # cache, the face detector and (on a Mac) macOS itself come on top, hence "at least".
        row, basis = forecast
        need = row["peak_bytes"]
        needs = f"at least {size(need)} at peak for {res}x{res} ({resolution.get('source') or 'assumed'}; {basis})"
        needs += speed_phrase(facts, row)
        largest = row.get("largest_buffer_bytes") or 0
        if kind == "mps" and largest > catalog.METAL_BUFFER_LIMIT:
            return Check(
                "memory",
                BLOCKER,
                f"one buffer of {size(largest)} ({row.get('largest_buffer_op') or 'attention'}): more than Metal's "
                f"2**32-byte limit for a buffer, so the run stops ({basis}).",
                "keep the port's chunking on: `lsync-port apply` the tree, and unset LATENTSYNC_MPS_CHUNKING=0",
            )
    else:
        need_gb = catalog.memory_need_gb(res, facts.release)
        need = need_gb * 1024**3
        hint = "; `lsync-port doctor TREE --forecast` measures it" if kind in ("mps", "cuda") else ""
        failed = (facts.raw.get("forecast") or {}).get("error")
        if failed:
            hint = f"; the live forecast failed: {failed}"
        needs = (
            f"{'at most ' if res < 256 else ''}~{need_gb:g} GB for {res}x{res} "
            f"({resolution.get('source') or 'assumed'}; estimate: {catalog.MEMORY_BASIS}{hint})"
        )
    weights = sum(
        e.get("size") or 0 for e in ((facts.raw.get("tree") or {}).get("checkpoints") or []) if e.get("required")
    )
    if total and weights and total < weights:
        return Check(
            "memory",
            BLOCKER,
            f"{size(total)} of RAM, less than the checkpoints alone ({size(weights)}).",
            "Use a machine with more memory.",
        )
    fix_mps = (
        "export PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 (lifts the MPS cap; macOS may swap) and "
        "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES=268435456 (attention in 256 MiB chunks: lower peak, slower); "
        "close other apps"
    )
    if kind == "mps":
        recommended = value(facts.torch.get("mps_recommended_max_memory"))
        budget = recommended or total
        budget_text = (
            f"Metal recommends {size(recommended)} for this process (of {size(total)} RAM)"
            if recommended
            else f"{size(total)} RAM (torch does not report Metal's limit)"
        )
        if not budget:
            return Check("memory", WARNING, f"memory unknown; {needs}.", "")
        if budget >= need:
            return Check("memory", OK, f"{budget_text}; {needs}.")
        ratio = _watermark(env)
        ratio = catalog.MPS_DEFAULT_HIGH_WATERMARK if ratio is None else ratio
        cap = math.inf if ratio == 0 or not recommended else recommended * ratio
        if need > cap:
            return Check(
                "memory",
                BLOCKER,
                f"{budget_text}, {size(cap)} with PYTORCH_MPS_HIGH_WATERMARK_RATIO={ratio:g}; {needs}: expect "
                "'MPS backend out of memory'.",
                fix_mps,
            )
        return Check("memory", WARNING, f"{budget_text}; {needs}: expect swapping.", fix_mps)
    if kind == "cuda":
        devices = value(facts.torch.get("cuda_devices")) or []
        budget = devices[0].get("total_memory") if devices else None
        if budget is None:
            return Check("memory", WARNING, f"GPU memory unknown; {needs}.", "")
        if budget >= need:
            return Check("memory", OK, f"GPU memory {size(budget)}; {needs}.")
        return Check(
            "memory",
            WARNING,
            f"GPU memory {size(budget)}; {needs}.",
            "Free the GPU of other processes, or use a smaller resolution (LatentSync 1.5, 256x256).",
        )
    budget = min(x for x in (total, cgroup) if x) if (total or cgroup) else None
    if budget is None:
        return Check("memory", WARNING, f"RAM unknown; {needs}.", "")
    limited = f" (a cgroup limit of {size(cgroup)})" if cgroup and cgroup < (total or math.inf) else ""
    if budget >= need:
        return Check("memory", OK, f"{size(budget)} RAM{limited} for inference on the CPU; {needs}.")
    return Check(
        "memory",
        WARNING,
        f"{size(budget)} RAM{limited} for inference on the CPU; {needs}.",
        "Close other programs, or use a machine with more memory.",
    )


@reads_facts
def check_environment(facts: ProbeFacts) -> Check:
    env = facts.section("probe", "env")
    relevant = (
        "PYTORCH_ENABLE_MPS_FALLBACK",
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO",
        "LATENTSYNC_DEVICE",
        "LATENTSYNC_DTYPE",
        "LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES",
    )
    # One verdict per fact: where the runtime helper ran, the device row judges LATENTSYNC_DEVICE and
    # LATENTSYNC_DTYPE (a bad value is its blocker); this row only points there.
    judged_by_device = ("LATENTSYNC_DEVICE", "LATENTSYNC_DTYPE") if facts.section("probe", "helper") else ()
    shown = ", ".join(
        f"{name}={env[name]}" for name in relevant if env.get(name) is not None and name not in judged_by_device
    )
    detail = shown or "none of PYTORCH_ENABLE_MPS_FALLBACK, PYTORCH_MPS_HIGH_WATERMARK_RATIO, LATENTSYNC_* set"
    if any(env.get(name) is not None for name in judged_by_device):
        set_here = " and ".join(name for name in judged_by_device if env.get(name) is not None)
        detail = (shown + "; " if shown else "no other variable set; ") + f"{set_here}: see the device row"
    problems, fixes = [], []
    ratio = env.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    if ratio is not None and _watermark(env) is None:
        problems.append(f"PYTORCH_MPS_HIGH_WATERMARK_RATIO={ratio!r} is not a number >= 0")
        fixes.append("set PYTORCH_MPS_HIGH_WATERMARK_RATIO to a number such as 1.7 (default) or 0.0 (no cap)")
    chunk = env.get("LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES")
    if chunk is not None and not (chunk.strip().isdigit() and int(chunk) > 0):
        problems.append(f"LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES={chunk!r} is not a positive number of bytes")
        fixes.append("set LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES to bytes, e.g. 268435456")
    if facts.is_mac and (env.get("PYTORCH_ENABLE_MPS_FALLBACK") or "").strip() != "1":
        problems.append(
            "PYTORCH_ENABLE_MPS_FALLBACK is not 1: an op without an MPS kernel raises NotImplementedError "
            "instead of running on the CPU"
        )
        fixes.append("export PYTORCH_ENABLE_MPS_FALLBACK=1")
    if problems:
        return Check("environment", WARNING, f"{detail}. " + "; ".join(problems) + ".", "; ".join(fixes))
    if _watermark(env) == 0 and ratio is not None:
        detail += " (the MPS memory cap is off: macOS may swap instead of raising out-of-memory)"
    return Check("environment", OK, detail + ".")
