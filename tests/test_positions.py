"""positions.LazyPositions gives libcst's PositionProvider positions, node for node, and computes
nothing until it is looked into."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from latentsync_mps.port.positions import LazyPositions

FIXTURES = Path(__file__).parent / "fixtures"

TRICKY = [
    "x = 1\n",
    "",
    "\n\n# only a comment\n",
    'def f(a, *, b=2) -> "T":\n    """doc\n    string"""\n    return a if b else (\n        a,\n    )\n',
    "@decorator(1)\n@other\nclass C(Base, metaclass=M):\n    x: int = 1; y = 2\n\n    async def g(self):\n"
    "        async with a as b, c:\n            await b\n",
    "value = f'{a!r:>{width}} {b}' + rb'raw' \\\n    + 'next line'\n",
    "if a:\n\tpass\nelif b:\n\tpass\nelse:\n\tpass\ntry:\n\tx\nexcept (E, F) as e:\n\traise\nfinally:\n\tdone()\n",
    "a = 1\r\nb = [\r\n    1,\r\n]\r\n",
    "a = 1\rb = 2\r",
    "lambda x, /, y: x[1:2, ::3] @ y ** -1\nwith (open(a) as f, open(b) as g):\n    pass\n",
    "match command:\n    case [x, *rest] if x > 0:\n        pass\n"
    "    case {'k': v, **kw}:\n        pass\n    case _:\n        pass\n",
    "for i in range(3):\n    continue\nelse:\n    del a[0], b.c\nglobal g\nwhile (n := n - 1):\n    yield from g\n",
]


def _same_as_libcst(module: cst.Module) -> None:
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    lazy = LazyPositions(module)
    assert len(lazy) == len(expected)
    for node, code_range in expected.items():
        assert lazy[node] == code_range, (type(node).__name__, code_range)


@pytest.mark.parametrize("source", TRICKY)
def test_tricky_sources(source):
    _same_as_libcst(cst.parse_module(source))


def test_every_python_file_of_the_fixtures():
    paths = sorted(FIXTURES.rglob("*.py"))
    assert len(paths) > 10
    for path in paths:
        _same_as_libcst(cst.parse_module(path.read_bytes()))


def test_nothing_is_computed_until_looked_into():
    module = cst.parse_module("x = torch.cuda.is_available()\n")
    lazy = LazyPositions(module)
    assert lazy._spans is None
    call = module.body[0].body[0].value
    assert (lazy[call].start.line, lazy[call].start.column, lazy[call].end.column) == (1, 4, 29)
    assert lazy._spans is not None and lazy[call] is lazy[call]
