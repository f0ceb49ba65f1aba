"""Robustness: every rule over a corpus of real Python files (this interpreter's site-packages).

For every file: the output parses and compiles, a file no rule changed is byte-identical, and a
second pass over the output changes nothing. CI runs a seeded sample; set LSYNC_CORPUS_FILES=5000
(or more) for the full run, e.g. `LSYNC_CORPUS_FILES=6000 pytest tests/test_corpus.py`.
"""

from __future__ import annotations

import os
import random
import sysconfig
from pathlib import Path

import libcst as cst
import pytest

from latentsync_mps.findings import PythonFinder
from latentsync_mps.rewrite import run_pass
from latentsync_mps.rules.base import FileContext, PythonRuleKind

SAMPLE = int(os.environ.get("LSYNC_CORPUS_FILES", "40"))
MAX_BYTES = int(os.environ.get("LSYNC_CORPUS_MAX_BYTES", "60000"))  # huge generated files add time, not coverage
NEEDLES = (b"cuda", b"interpolate", b"device", b"Provider")


def corpus() -> list[Path]:
    """Seeded shuffle of site-packages; files that mention what the rules look for come first,
    so that even a small sample exercises rewrites and not only the no-match path."""
    root = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in root.rglob("*.py") if p.stat().st_size <= MAX_BYTES)
    random.Random(1247).shuffle(files)
    interesting = [p for p in files if any(n in p.read_bytes() for n in NEEDLES)]
    chosen = set(interesting)
    return interesting + [p for p in files if p not in chosen]


@pytest.fixture(scope="module")
def kinds(pack) -> list[PythonRuleKind]:
    built = [kind for profile in pack.profiles.values() for kind in profile.kinds() if isinstance(kind, PythonRuleKind)]
    assert len(built) >= 5
    return built


def test_every_rule_over_real_files(kinds):
    files = corpus()
    assert len(files) >= min(SAMPLE, 1000), "the corpus is too small to mean anything"
    checked = changed = 0
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
            first = run_pass(data, kinds, ctx, [PythonFinder(ctx.path)])
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
        changed += 1
        try:
            compile(first.code, str(path), "exec")
        except SyntaxError as error:
            failures.append(f"{path}: the rewritten file does not compile: {error}")
            continue
        second = run_pass(first.code, kinds, ctx)
        if second.changes or second.code != first.code:
            failures.append(f"{path}: a second pass changed it again: {[c.rule_id for c in second.changes]}")
    assert not failures, "\n".join(failures[:20])
    assert checked >= min(SAMPLE, 100)
    print(f"{checked} files checked, {changed} rewritten")
