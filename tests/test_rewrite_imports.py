"""rewrite._plain_imports adds the helper imports exactly as libcst's AddImportsVisitor does
(the visitor runs where the case is not the plain one)."""

from __future__ import annotations

import libcst as cst
import pytest
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor

from latentsync_mps.port.rewrite import _plain_imports

HEADS = [
    "",
    "x = 1\n",
    '"""Doc."""\nx = 1\n',
    '"""Doc."""\n\nimport os\nimport sys\n\n\ndef f():\n    pass\n',
    "import os\nfrom typing import Any\n# a comment\nx = 1\n",
    "import os\nimport torch\nclass A:\n    pass\n",
    "import torch.nn\nimport torch as T\nx = T\n",
    "from . import sibling\nfrom latentsync.models import unet\n\nx = 1\n",
    "#!/usr/bin/env python\n# header comment\nimport os\n\n# about x\nx = 1\n",
    "import os\n",
    '"""Doc."""\n',
    "from __future__ import annotations\n\nimport os\n\nif True:\n    import sys\n",
    "import os, sys\nx = 1\n",
    "import os; import sys\nx = 1\n",
]
NEEDED = [
    [("latentsync", "_lsync_port")],
    [("torch", None)],
    [("torch", None), ("latentsync", "_lsync_port"), ("latentsync", "_lsync_port")],
    [("latentsync.utils", "b"), ("latentsync.utils", "a"), ("os", None), ("numpy", None)],
]


def _visitor_result(module: cst.Module, needed: list[tuple[str, str | None]]) -> str:
    context = CodemodContext()
    for name, obj in needed:
        AddImportsVisitor.add_needed_import(context, name, obj)
    return module.visit(AddImportsVisitor(context)).code


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("needed", NEEDED)
def test_the_plain_case_is_the_visitor_s_result(head, needed):
    module = cst.parse_module(head)
    context = CodemodContext()
    for name, obj in needed:
        AddImportsVisitor.add_needed_import(context, name, obj)
    plain = _plain_imports(module, AddImportsVisitor._get_imports_from_context(context))
    assert plain is not None
    assert plain.code == _visitor_result(module, needed)


@pytest.mark.parametrize(
    ("head", "needed"),
    [
        ("from latentsync import other\nx = 1\n", [("latentsync", "_lsync_port")]),  # the visitor extends it
        ('"a" "b"\nx = 1\n', [("torch", None)]),  # not a docstring to the visitor
        ("__strict__ = True\nx = 1\n", [("torch", None)]),
    ],
)
def test_other_cases_are_left_to_the_visitor(head, needed):
    context = CodemodContext()
    for name, obj in needed:
        AddImportsVisitor.add_needed_import(context, name, obj)
    assert _plain_imports(cst.parse_module(head), AddImportsVisitor._get_imports_from_context(context)) is None


def test_relative_or_aliased_imports_are_left_to_the_visitor():
    context = CodemodContext()
    AddImportsVisitor.add_needed_import(context, "", "_lsync_port", relative=1)
    assert _plain_imports(cst.parse_module("x = 1\n"), AddImportsVisitor._get_imports_from_context(context)) is None
    context = CodemodContext()
    AddImportsVisitor.add_needed_import(context, "torch", asname="T")
    assert _plain_imports(cst.parse_module("x = 1\n"), AddImportsVisitor._get_imports_from_context(context)) is None
