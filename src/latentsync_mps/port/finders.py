"""Finders: what in a tree is still tied to CUDA, with file:line, why it breaks on a Mac and the fix.

Every finder is a detection-only rule in patches/findings/ (data: finding kind, severity, why,
fix, the tables it matches with, examples; the kinds are in rules/report.py and the files it
names). This module runs those its caller gives (the pack's RulePack.detectors()) whose needles a
file holds. `scan` shows what they report for a whole tree; `apply` runs the same finders over its
result and calls what is left on the inference path *residue*. Severity:
  error    breaks, silently skips the GPU, or computes differently on a Mac (counted as residue)
  warning  may break depending on data or size (float64 arrays, memory on MPS, sdist builds)

Kinds (see KINDS for the one-line meaning of each):
  cuda-literal, cuda-method, torch-cuda, onnx-cuda-provider    CUDA named where a device is chosen
  fp16-hardcoded, fp16-default, interpolate-fp16               precision that only CUDA handles well
  xformers, sdpa-pin                                           attention kernels that exist on NVIDIA only
  cpu-branch, cuda-only-check, cuda-branch, cuda-flag          control flow that treats only CUDA as a GPU
  float64, mps-attention, mps-vae                              (warnings) data- and size-dependent
  cuda-index, no-mac-wheel, sdist-only                         requirement files
  media-io, load-time-import, ffmpeg-on-path                   what a Mac's ComfyUI stack lacks
  outside-comfyui                                              a node deleting outside ComfyUI
"""

from __future__ import annotations

from collections.abc import Sequence

from latentsync_mps.port.outcome import Finding
from latentsync_mps.port.rewrite import run_pass
from latentsync_mps.port.rules.base import FileContext
from latentsync_mps.port.rules.report import DetectionFinder, DetectionRuleKind, PythonDetectionKind, RequirementReport

KINDS = {
    "cuda-literal": 'a "cuda" device string where a device is chosen',
    "cuda-method": "a .cuda() move",
    "torch-cuda": "a torch.cuda.* call",
    "onnx-cuda-provider": "an ONNX Runtime provider list with CUDA only",
    "fp16-hardcoded": "float16 pinned where a dtype is chosen",
    "fp16-default": "a half-precision switch that defaults to on for every GPU",
    "interpolate-fp16": "nearest F.interpolate without a float32 round trip",
    "xformers": "the xformers attention switch, not limited to CUDA",
    "sdpa-pin": "scaled-dot-product attention pinned to a CUDA-only kernel",
    "cpu-branch": 'a component left out when the device is "cpu"',
    "cuda-only-check": "a device check that raises for everything but CUDA",
    "cuda-branch": "a tensor treated as on the GPU only when on CUDA",
    "cuda-flag": "a CUDA backend flag set for every device",
    "pin-memory": "page-locked host memory, which only CUDA transfers use",
    "float64": "float64 that may reach the device",
    "mps-attention": "attention whose score matrix is one buffer on MPS",
    "mps-vae": "a whole batch through the VAE at once on MPS",
    "cuda-index": "a CUDA wheel index",
    "no-mac-wheel": "a requirement with no macOS arm64 wheel",
    "sdist-only": "a requirement that builds from source on a Mac",
    "media-io": "video or audio read or written through torchvision.io or torchaudio's I/O",
    "load-time-import": "a module imported when the file loads that a Mac's stack may lack",
    "ffmpeg-on-path": "ffmpeg run by name, found on PATH only",
    "outside-comfyui": "a path above the ComfyUI root, where the node deletes folders",
}


def python_finders(path: str, data: bytes, detectors: Sequence[DetectionRuleKind]) -> list[DetectionFinder]:
    """The visitors that find what is CUDA-only in one Python file: the detection-only rules
    (`detectors`: the pack's RulePack.detectors()) that can match it (`may_match`: one of their
    needles is in `data`; none: the file need not be parsed for them). Each finder is told which others
    supersede it (their `supersedes` names its rule), so one reference is reported once."""
    finders = [
        d.finder(path)
        for d in detectors
        if isinstance(d, PythonDetectionKind) and d.rule.covers_path(path) and d.may_match(data)
    ]
    for finder in finders:
        rule_id = finder.kind.rule.id
        finder.superseded_by = [other for other in finders if rule_id in other.kind.supersedes]
    return finders


def find_in_python(path: str, data: bytes, detectors: Sequence[DetectionRuleKind]) -> list[Finding]:
    """The finders alone over one file: the same single pass apply runs, with no rules."""
    finders = python_finders(path, data, detectors)
    if not finders:
        return []
    return sorted(run_pass(data, [], FileContext(path, ""), finders).residue, key=lambda f: f.line)


def find_in_requirements(path: str, text: str, detectors: Sequence[DetectionRuleKind]) -> list[Finding]:
    """The requirement-file rules of `detectors` (the pack's RulePack.detectors()), line by line."""
    rules = [d for d in detectors if isinstance(d, RequirementReport) and d.rule.covers_path(path)]
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule in rules:
            finding = rule.report(path, number, line)
            if finding is not None:
                found.append(finding)
                break  # one finding a line
    return found
