"""The checks of `lsync-port doctor`: one small pure function per topic, in table order.

Each takes the facts (the plain dict doctor gathers, or `facts.ProbeFacts`, the same facts parsed
once) and answers with a Check: ok, warning or blocker, what it found, and the concrete fix. A
check that does not apply answers None. Nothing here touches the machine, so the tests can give
any machine's answers on any other.

    facts.py           the facts, parsed once (ProbeFacts), and the readers it is built from
    verdicts.py        Check and its statuses
    machine_checks.py  platform, python, decord, torch, target torch, mps, cuda, device,
                       onnxruntime, insightface, ffmpeg; the interpreter when the probe failed
    tree_checks.py     tree, requirements, checkpoints, face models, vae, tkinter
    stack_checks.py    the host stack modelled, the tree's requirements resolved for that Mac (uv)
    memory_checks.py   memory, environment
"""

from __future__ import annotations

from typing import Any

from latentsync_mps.features.doctor.facts import ProbeFacts
from latentsync_mps.features.doctor.machine_checks import (
    check_cuda,
    check_decord,
    check_device,
    check_ffmpeg,
    check_insightface,
    check_mps,
    check_onnxruntime,
    check_platform,
    check_probe,
    check_python,
    check_target_torch,
    check_torch,
)
from latentsync_mps.features.doctor.memory_checks import check_environment, check_memory
from latentsync_mps.features.doctor.stack_checks import check_mac_resolve, check_stack
from latentsync_mps.features.doctor.tree_checks import (
    check_checkpoints,
    check_face_models,
    check_requirements,
    check_tkinter,
    check_tree,
    check_vae,
)
from latentsync_mps.features.doctor.verdicts import Check

CHECKS = (
    check_platform,
    check_python,
    check_decord,
    check_torch,
    check_target_torch,
    check_mps,
    check_cuda,
    check_device,
    check_onnxruntime,
    check_insightface,
    check_ffmpeg,
    check_tree,
    check_requirements,
    check_stack,
    check_mac_resolve,
    check_checkpoints,
    check_face_models,
    check_vae,
    check_tkinter,
    check_memory,
    check_environment,
)


def diagnose(facts: dict[str, Any]) -> list[Check]:
    """Every check that applies, in table order. When the probe could not run, only what is known."""
    parsed = ProbeFacts.parse(facts)  # once, for every check
    if facts.get("probe_error"):
        chosen = (check_probe, check_tree, check_checkpoints)
    else:
        chosen = CHECKS
    return [c for c in (check(parsed) for check in chosen) if c is not None]
