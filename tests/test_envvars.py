"""The table of environment variables (latentsync_mps/cli/envvars.py) matches what the code reads.

Reads under src/ are found in the syntax tree: `os.environ.get(X)`, `os.getenv(X)`,
`os.environ[X]`, `X in os.environ`, `os.environ.setdefault/pop(X)`, with X a string, a module
constant, or the loop variable over a tuple of them. A read whose name cannot be worked out that
way fails the test too, so no read escapes it. Tests and scripts are held to the project's own
names (LSYNC_*, LATENTSYNC_*): every one they mention must be declared.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from latentsync_mps.cli.envvars import ENV_VARS, READERS, TESTS

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
DECLARED = {var.name for var in ENV_VARS}


def _module_strings(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level NAME = "X" or NAME = ("X", "Y", ...)."""
    constants: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        strings = _strings(value, constants)
        for target in targets:
            if isinstance(target, ast.Name) and strings is not None:
                constants[target.id] = strings
    return constants


def _strings(node: ast.AST | None, names: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        parts = [_strings(element, names) for element in node.elts]
        if all(part is not None for part in parts):
            return tuple(name for part in parts for name in part)
    return None


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ`."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


class _Reads(ast.NodeVisitor):
    def __init__(self, constants: dict[str, tuple[str, ...]]) -> None:
        self.scopes = [dict(constants)]
        self.found: list[tuple[int, tuple[str, ...] | None]] = []

    def _loop(self, target: ast.AST, iterable: ast.AST) -> None:
        if isinstance(target, ast.Name):
            strings = _strings(iterable, self.scopes[-1])
            if strings is not None:
                self.scopes[-1] = {**self.scopes[-1], target.id: strings}

    def visit_For(self, node: ast.For) -> None:
        self._loop(node.target, node.iter)
        self.generic_visit(node)

    def _comprehension(self, node: ast.AST) -> None:
        self.scopes.append(dict(self.scopes[-1]))
        for generator in node.generators:
            self._loop(generator.target, generator.iter)
        self.generic_visit(node)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def _read(self, line: int, key: ast.AST) -> None:
        self.found.append((line, _strings(key, self.scopes[-1])))

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if isinstance(function, ast.Attribute) and node.args:
            if function.attr in ("get", "setdefault", "pop") and _is_environ(function.value):
                self._read(node.lineno, node.args[0])
            elif function.attr == "getenv":
                self._read(node.lineno, node.args[0])
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            self._read(node.lineno, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)) and _is_environ(right):
                self._read(node.lineno, node.left)
        self.generic_visit(node)


def reads_in(path: Path) -> list[tuple[int, tuple[str, ...] | None]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    visitor = _Reads(_module_strings(tree))
    visitor.visit(tree)
    return visitor.found


def src_reads() -> tuple[dict[str, list[str]], list[str]]:
    """{variable: [file:line, ...]} for every read under src/, and the reads whose name is unknown."""
    named: dict[str, list[str]] = {}
    unknown = []
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        for line, names in reads_in(path):
            if names is None:
                unknown.append(f"{where}:{line}")
            for name in names or ():
                named.setdefault(name, []).append(f"{where}:{line}")
    return named, unknown


def test_the_reader_sees_every_form_of_read(tmp_path):
    """The scanner itself: each form the docstring lists is found, a write is not a read."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom os import environ\nA = 'VAR_A'\nALL = (A, 'VAR_B')\n"
        "os.environ.get('VAR_C')\nos.getenv(A)\nos.environ['VAR_D']\n'VAR_E' in os.environ\n"
        "environ.get('VAR_F', '')\n{n: os.environ.get(n) for n in ALL}\nos.environ['VAR_W'] = '1'\n"
        "def f(name):\n    return os.environ.get(name)\n"
    )
    found = reads_in(sample)
    names = sorted(name for _, group in found if group for name in group)
    assert names == ["VAR_A", "VAR_A", "VAR_B", "VAR_C", "VAR_D", "VAR_E", "VAR_F"]
    assert [line for line, group in found if group is None] == [13]


def test_every_variable_read_under_src_is_declared():
    named, unknown = src_reads()
    assert not unknown, f"environment reads whose variable name is not a literal or module constant: {unknown}"
    missing = {name: places for name, places in named.items() if name not in DECLARED}
    assert not missing, (
        f"read but not declared in src/latentsync_mps/cli/envvars.py: {missing}; add an EnvVar for each "
        "(then: python scripts/gen_reference.py)"
    )


def test_every_declared_variable_is_read_somewhere():
    """A declared variable that nothing reads any more is a stale line of the table."""
    named, _ = src_reads()
    mentioned = set(named)
    for path in [*sorted((REPO / "tests").rglob("*.py")), *sorted((REPO / "scripts").glob("*"))]:
        if path.is_file() and path.suffix in (".py", ".sh"):
            mentioned.update(re.findall(r"\b[A-Z][A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    stale = sorted(DECLARED - mentioned)
    assert not stale, f"declared in src/latentsync_mps/cli/envvars.py but read nowhere: {stale}"
    for var in ENV_VARS:
        assert var.reader in READERS and var.meaning and var.values, var
        if var.reader != TESTS:
            assert var.name in named, f"{var.name} is declared for {var.reader!r} but nothing under src/ reads it"


def test_the_project_names_used_by_tests_and_scripts_are_declared():
    """LSYNC_* and LATENTSYNC_* named in tests, scripts and CI (not as an attribute)."""
    project = re.compile(r"(?<![.\w])(?:LSYNC|LATENTSYNC)_[A-Z0-9_]+\b")
    files = [*sorted((REPO / "tests").glob("*.py")), *sorted((REPO / "scripts").glob("*"))]
    files += [p for p in (REPO / ".ci").glob("*") if p.is_file()] + sorted((REPO / ".github").rglob("*.yml"))
    used: dict[str, str] = {}
    for path in files:
        if path.is_file():
            for name in project.findall(path.read_text(encoding="utf-8", errors="replace")):
                used.setdefault(name, path.relative_to(REPO).as_posix())
    missing = {name: where for name, where in used.items() if name not in DECLARED}
    assert not missing, f"named but not declared in src/latentsync_mps/cli/envvars.py: {missing}"
