"""rules/names.py: the lookups answered without the provider's traversal (LazyImportedNames)
are the provider's own answers, node for node; a module whose import table changes along the
traversal is left to the provider."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper

from latentsync_mps.port.rules.names import ImportedNameProvider, lazy_imported_names

FIXTURES = Path(__file__).parent / "fixtures"


class _Every(cst.CSTVisitor):
    def __init__(self) -> None:
        self.nodes: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.nodes.append(node)
        return True


def _compare(source: str) -> int:
    module = cst.parse_module(source)
    lazy = lazy_imported_names(module)
    assert lazy is not None
    eager = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ImportedNameProvider)
    every = _Every()
    module.visit(every)
    for node in every.nodes:
        assert lazy.get(node, "none") == eager.get(node, "none"), cst.Module([]).code_for_node(node)
    assert dict(lazy) == dict(eager)
    return len(eager)


def test_the_lazy_answers_are_the_provider_s_on_every_node_of_the_fixtures():
    compared = 0
    for path in sorted(FIXTURES.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        module = cst.parse_module(source)
        if lazy_imported_names(module) is not None:
            compared += _compare(source)
    assert compared > 1000


def test_an_import_inside_a_function_that_agrees_with_the_top_level_is_answered_lazily():
    _compare("import torch\nimport torch.nn.functional as F\n\ndef f():\n    import torch\n    F.interpolate(x)\n")


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    import torch.nn.functional as F\n    return F.interpolate(x)\nF.interpolate(y)\n",
        "import numpy as F\nF.x()\nimport torch.nn.functional as F\nF.interpolate(y)\n",
        "import torch.nn.functional as F\nif x:\n    from numpy import F\nF.interpolate(y)\n",
        "import torch\ntry:\n    import torch_npu as torch\nexcept ImportError:\n    pass\ntorch.cuda.x()\n",
    ],
)
def test_a_table_that_changes_along_the_traversal_is_left_to_the_provider(source):
    assert lazy_imported_names(cst.parse_module(source)) is None
