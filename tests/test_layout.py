"""The package's layout holds: imports run one way, features stand side by side, and what runs in
the tree's interpreter (payload/) imports nothing of lsync-port. docs/development.md draws it.

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "latentsync_mps"
# Each folder and the folders it may import from, besides itself. Lower layers never import higher ones.
LAYERS = ["pack", "port", "host", "features", "render", "cli"]
PROTOCOL = "payload.protocol"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The lsync-port modules `name` imports (relative imports resolved), as names below the package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(["latentsync_mps", *base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from package import module` imports the module (the package's __init__ is only a docstring)
            submodules = {f"{target}.{a.name}" for a in node.names}
            named = {m for m in submodules if m.removeprefix("latentsync_mps.") in MODULES}
            found |= named if named == submodules else {target} | named
    ours = {t.removeprefix("latentsync_mps").lstrip(".") for t in found if t.split(".")[0] == "latentsync_mps"}
    return {t for t in ours if t in MODULES or t == ""}


MODULES = _modules()


def _layer(module: str) -> str:
    return module.split(".")[0] if module else ""


def _broken(module: str, target: str) -> str | None:
    """Why `module` may not import `target`, or None when it may."""
    here, there = _layer(module), _layer(target)
    if there == "":
        return None if here != "payload" else "payload/ imports nothing of lsync-port, not even its version"
    if there == here and not (here == "features" and target.split(".")[:2] != module.split(".")[:2]):
        return None  # the same folder (for a feature: its own files)
    if here == "payload":
        return "payload/ runs in the tree's interpreter, where lsync-port may be missing: it imports only payload/"
    if there == "payload":
        return None if target == PROTOCOL else "only payload/protocol.py may be imported from outside payload/"
    if here == "features" and there == "features":
        return "features stand side by side: none imports another (share through host/, port/ or pack/)"
    if here not in LAYERS or there not in LAYERS:
        return f"{module} or {target} is in no folder of the layout"
    if LAYERS.index(there) > LAYERS.index(here):
        return f"{here}/ sits below {there}/: imports run cli -> render -> features -> host -> port -> pack"
    return None


def test_every_import_follows_the_layout():
    broken = [
        f"{module} imports {target}: {why}"
        for module, path in MODULES.items()
        for target in sorted(_imports(module, path))
        if target != module and (why := _broken(module, target))
    ]
    assert not broken, "\n".join(broken)


def test_no_module_sits_outside_the_folders():
    loose = [m for m in MODULES if m and "." not in m and MODULES[m].name != "__init__.py"]
    assert not loose, f"modules at the package's top level: {loose}; put each in its folder"


def test_every_folder_says_what_lives_there_and_what_it_may_import():
    for folder in [PACKAGE / layer for layer in [*LAYERS, "payload"]]:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "import" in doc.lower(), (
            f"{folder.name}/__init__.py needs a docstring that says what it may import"
        )


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles():
    """A package imports its own modules from its __init__ at most; between modules, no circle."""
    graph = {m: {t for t in _imports(m, p) if t and t != m and not m.startswith(t + ".")} for m, p in MODULES.items()}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("pack.ruleset", "port.rules", False),
        ("features.doctor", "features.forecast", False),
        ("payload.verify.harness", "pack.paths", False),
        ("host.needs", "payload.verify.harness", False),
        ("host.child", PROTOCOL, True),
        ("cli.commands.apply", "render.plan", True),
        ("features.verify.runner", "features.verify.other", True),
        ("port.planning", "pack.ruleset", True),
    ],
)
def test_the_rule_itself(module, target, allowed):
    assert (_broken(module, target) is None) == allowed
