"""Robustness: every rule over a corpus of real Python files.

For every file: the output parses and compiles, a file no rule changed is byte-identical, and a
second pass over the output changes nothing. CI runs a seeded sample of the pinned torch's own
files (scripts/test.sh installs torch 2.13.0), so that which files the rules rewrite, and how
often, is known in advance and checked. Set LSYNC_CORPUS_FILES=5000 (or more) for the full run
over this interpreter's whole site-packages, e.g. `LSYNC_CORPUS_FILES=6000 pytest tests/test_corpus.py`.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sysconfig
from collections import Counter
from importlib import metadata
from pathlib import Path

import libcst as cst
import pytest

from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.finders import python_finders
from latentsync_mps.port.rewrite import run_pass
from latentsync_mps.port.rulepack import load
from latentsync_mps.port.rules.base import FileContext, PythonRuleKind

FULL = "LSYNC_CORPUS_FILES" in os.environ
SAMPLE = int(os.environ.get("LSYNC_CORPUS_FILES", "40"))
MAX_BYTES = int(os.environ.get("LSYNC_CORPUS_MAX_BYTES", "60000"))  # huge generated files add time, not coverage
NEEDLES = (b"cuda", b"interpolate", b"device", b"Provider")
# The bundled pack's detection rules, as scan and apply run them.
DETECTORS = load(patches_dir()).detectors()
SAMPLE_TORCH = "2.13.0"
# The CI sample (40 files of torch 2.13.0): the files that rules rewrite, with each rule's count.
# The other 34 of the sample mention a needle but hold nothing a rule matches.
EXPECTED_REWRITES = {
    "_inductor/kernel/mm.py": {"torch-cuda-calls": 2},
    "_inductor/kernel_inputs.py": {"torch-cuda-calls": 2},
    "_inductor/lookup_table/choices.py": {"torch-cuda-calls": 2, "xformers-needs-cuda": 1},
    "testing/_internal/distributed/_tensor/common_dtensor.py": {"mps-attention-chunks": 2, "torch-cuda-calls": 4},
    "testing/_internal/jit_utils.py": {"torch-cuda-calls": 8},
    "utils/benchmark/utils/sparse_fuzzer.py": {"device-literal": 1},
}


def corpus() -> tuple[Path, list[Path]]:
    """The root and its files, seeded shuffle: site-packages for the full run, else the torch
    package. Files that mention what the rules look for come first, so that even a small sample
    exercises rewrites and not only the no-match path; the full run goes on with the others."""
    if FULL:
        root = Path(sysconfig.get_paths()["purelib"])
    else:
        version = metadata.version("torch").split("+")[0]
        if version != SAMPLE_TORCH:  # a failure under LSYNC_PORT_REQUIRE_EXTRAS (scripts/test.sh, CI)
            pytest.skip(f"the CI sample is torch {SAMPLE_TORCH}'s files, this is torch {version}")
        root = Path(importlib.util.find_spec("torch").submodule_search_locations[0])
    files = sorted(
        (p for p in root.rglob("*.py") if p.stat().st_size <= MAX_BYTES), key=lambda p: p.relative_to(root).as_posix()
    )
    random.Random(1247).shuffle(files)
    interesting = [p for p in files if any(n in p.read_bytes() for n in NEEDLES)]
    chosen = set(interesting)
    return root, interesting + ([p for p in files if p not in chosen] if FULL else [])


@pytest.fixture(scope="module")
def kinds(pack) -> list[PythonRuleKind]:
    built = [kind for profile in pack.profiles.values() for kind in profile.kinds() if isinstance(kind, PythonRuleKind)]
    assert len(built) >= 5
    return built


def test_every_rule_over_real_files(kinds):
    root, files = corpus()
    assert len(files) >= min(SAMPLE, 1000 if FULL else 500), "the corpus is too small to mean anything"
    checked = 0
    rewrites: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    for path in files:
        if checked >= SAMPLE:
            break
        data = path.read_bytes()
        try:
            cst.parse_module(data)
        except (cst.ParserSyntaxError, UnicodeDecodeError, ValueError):
            continue  # not for this tool: the engine reports such files and leaves them alone
        checked += 1
        ctx = FileContext(path.name, "latentsync._lsync_port")
        try:
            first = run_pass(data, kinds, ctx, python_finders(ctx.path, data, DETECTORS))
        except RecursionError:
            # Generated code nested deeper than Python's recursion limit: the engine reports such a
            # file and leaves it untouched (tests/test_safety.py checks that), which is the property.
            continue
        except Exception as error:  # noqa: BLE001 - any crash on real code is a finding
            failures.append(f"{path}: crashed: {type(error).__name__}: {error}")
            continue
        if not first.changes:
            if first.code != data:
                failures.append(f"{path}: no rule matched, yet the bytes changed")
            continue
        rewrites[path.relative_to(root).as_posix()] = dict(sorted(Counter(c.rule_id for c in first.changes).items()))
        try:
            compile(first.code, str(path), "exec")
        except SyntaxError as error:
            failures.append(f"{path}: the rewritten file does not compile: {error}")
            continue
        second = run_pass(first.code, kinds, ctx)
        if second.changes or second.code != first.code:
            failures.append(f"{path}: a second pass changed it again: {[c.rule_id for c in second.changes]}")
    assert not failures, "\n".join(failures[:20])
    assert checked >= min(SAMPLE, 100) if FULL else checked == SAMPLE
    print(f"{checked} files checked, {len(rewrites)} rewritten")
    # The rules really rewrote what they match: which files, by which rules, how many times.
    if FULL:
        assert rewrites, "no rule rewrote any file of the corpus"
    else:
        assert rewrites == EXPECTED_REWRITES
