"""scripts/mutation_check.py names each mutation by an exact snippet of one file. When code moves
(engine.py became engine/ and then port/, mps_sim.py became mpssim/), a snippet that no longer occurs once makes
that mutation an error instead of a check: this test says so at once, not when someone next runs
the (slow, not-in-CI) mutation check."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _mutations():
    spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MUTATIONS


def test_every_mutation_snippet_occurs_exactly_once_in_its_file():
    mutations = _mutations()
    assert len(mutations) >= 22
    wrong = {}
    for mutation in mutations:
        path = REPO / mutation.file
        count = path.read_text(encoding="utf-8").count(mutation.original) if path.exists() else None
        if count != 1:
            wrong[mutation.name] = (mutation.file, "file missing" if count is None else f"found {count} times")
    assert not wrong, f"re-point these in scripts/mutation_check.py: {wrong}"


def test_every_mutation_names_tests_that_exist():
    for mutation in _mutations():
        files = [arg.split("::")[0] for arg in mutation.tests if arg.startswith("tests/")]
        assert files, mutation.name
        for name in files:
            assert (REPO / name).is_file(), f"{mutation.name}: {name} does not exist"
