"""Complete by construction (issue 13, part 2): every CUDA tie is rewritten or reported.

The cases are generated from the installed torch: every public callable and type of torch.cuda
(and of its submodules, the *Tensor types included), torch.backends.cuda and torch.backends.cudnn,
and every flag of the backends. Each is either rewritten (and the rewritten code runs here, on a
torch without CUDA) or reported at its line. Then the invariant: after apply, every mention of
CUDA on the inference path is accounted for (cuda_mentions.py), on the fixtures and, opt-in, on
the real trees (LSYNC_UPSTREAM / LSYNC_COMFY).
"""

from __future__ import annotations

import inspect
import os
import shutil
import types
from pathlib import Path

import pytest
from conftest import FIXTURES

from latentsync_mps.pack.paths import patches_dir, runtime_helper_source
from latentsync_mps.pack.rule import path_matches
from latentsync_mps.port.cuda_mentions import account, unaccounted
from latentsync_mps.port.detection import detect
from latentsync_mps.port.finders import python_finders
from latentsync_mps.port.planning import make_plan, select_kinds
from latentsync_mps.port.rewrite import run_pass
from latentsync_mps.port.rulepack import load
from latentsync_mps.port.rules.base import FileContext, PythonRuleKind
from latentsync_mps.port.transaction import commit
from latentsync_mps.port.tree import walk

torch = pytest.importorskip("torch")

PATH = "latentsync/models/example.py"  # on the inference path, inside every Python rule's files
# The bundled pack's detection rules, as scan and apply run them.
DETECTORS = load(patches_dir()).detectors()
NAMESPACES = ("torch.cuda", "torch.backends.cuda", "torch.backends.cudnn")
# Sample arguments for required parameters, by name, so that rewritten calls can run.
SAMPLES = {"seed": "0", "fraction": "0.5", "device": "0", "index": "0"}


def _public(module: types.ModuleType):
    names = set(dir(module))
    if type(module) is not types.ModuleType:  # torch.backends.cudnn is a PropModule: flags on its class,
        names |= set(dir(type(module))) - set(dir(types.ModuleType))  # functions on the module it wraps
        names |= set(dir(getattr(module, "m", None) or ()))
        names.discard("m")
    for name in sorted(names):
        if name.startswith("_"):
            continue
        try:
            yield name, getattr(module, name)
        except Exception:  # noqa: BLE001 - a lazy attribute that needs CUDA to exist
            continue


def cuda_apis() -> list[tuple[str, str]]:
    """(qualified name, "call" | "reference" | "flag") for the installed torch."""
    found: dict[str, str] = {}
    for namespace in NAMESPACES:
        root = eval(namespace, {"torch": torch})  # noqa: S307 - a fixed dotted name
        modules = [(namespace, root)]
        for name, value in _public(root):  # one level of submodules: torch.cuda.amp, .nvtx, .memory ...
            if isinstance(value, types.ModuleType) and value.__name__.startswith(f"{root.__name__}."):
                modules.append((f"{namespace}.{name}", value))
        for prefix, module in modules:
            for name, value in _public(module):
                qualified = f"{prefix}.{name}"
                if isinstance(value, types.ModuleType):
                    if value.__name__.startswith(f"{root.__name__}."):
                        found.setdefault(qualified, "reference")
                    continue
                if callable(value) and not str(getattr(value, "__module__", "") or "").startswith("torch"):
                    continue  # typing helpers and the like, imported into the module
                if isinstance(value, type) or not callable(value):
                    kind = "flag" if prefix.startswith("torch.backends") and not callable(value) else "reference"
                    if not callable(value) and not prefix.startswith("torch.backends"):
                        continue  # constants of torch.cuda (none are device choices)
                    found.setdefault(qualified, kind)
                else:
                    found.setdefault(qualified, "call")
    return sorted(found.items())


APIS = cuda_apis()


def test_the_generated_cases_cover_torchs_cuda_namespaces():
    names = {name for name, _ in APIS}
    # A floor, not the list: a torch without these would mean the derivation broke.
    for expected in (
        "torch.cuda.empty_cache",
        "torch.cuda.FloatTensor",
        "torch.cuda.amp.autocast",
        "torch.cuda.nvtx.range_push",
        "torch.backends.cudnn.benchmark",
        "torch.backends.cuda.matmul",
    ):
        assert expected in names, expected
    assert len(names) > 150


def _arguments(name: str) -> str:
    try:
        target = eval(name, {"torch": torch})  # noqa: S307
        signature = inspect.signature(target)
    except (TypeError, ValueError, AttributeError):
        return ""
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return ", ".join(SAMPLES.get(p.name, "0") for p in required)


def snippet(name: str, form: str) -> str:
    if form == "call":
        return f"import torch\nresult = {name}({_arguments(name)})\n"
    if form == "flag":
        return f"import torch\n{name} = True\n"
    return f"import torch\nresult = {name}\n"


@pytest.fixture(scope="module")
def kinds(pack) -> list[PythonRuleKind]:
    profile = pack.profiles["latentsync"]
    return [k for k in select_kinds(profile, None, None) if isinstance(k, PythonRuleKind)]


@pytest.fixture(scope="module")
def helper_package(tmp_path_factory) -> Path:
    """`latentsync._lsync_port` importable, as apply writes it into a tree."""
    root = tmp_path_factory.mktemp("helper")
    (root / "latentsync").mkdir()
    (root / "latentsync" / "__init__.py").write_text("")
    (root / "latentsync" / "_lsync_port.py").write_text(runtime_helper_source())
    return root


def port(source: str, kinds: list[PythonRuleKind]):
    active = [k for k in kinds if k.rule.covers_path(PATH) and any(n in source for n in k.needles())]
    finders = python_finders(PATH, source.encode(), DETECTORS)
    return run_pass(source, active, FileContext(PATH, "latentsync._lsync_port"), finders)


def run_without_cuda(code: str, helper_package: Path, monkeypatch) -> dict:
    monkeypatch.syspath_prepend(str(helper_package))
    monkeypatch.delenv("LATENTSYNC_DEVICE", raising=False)
    namespace: dict = {}
    exec(compile(code, PATH, "exec"), namespace)  # noqa: S102 - our own rewritten snippet
    return namespace


def _assert_rewritten_or_reported(source: str, line: int, kinds, helper_package, monkeypatch, marker: str):
    """ "reported" when a finding names the line; else it must be rewritten (`marker`, the CUDA
    spelling, gone) and the rewritten code must run on this torch, which has no CUDA."""
    result = port(source, kinds)
    if line in [f.span[0] for f in result.residue]:  # the line in the source (f.line: in the rewritten file)
        return "reported"
    new = result.code.decode()
    assert result.changes and marker not in new, f"{marker}: neither rewritten nor reported\n{source}"
    assert torch.cuda.is_available() is False, "the point is to run it without CUDA"
    run_without_cuda(new, helper_package, monkeypatch)
    return "rewritten"


@pytest.mark.parametrize(("name", "form"), APIS, ids=[name for name, _ in APIS])
def test_every_cuda_api_is_rewritten_or_reported(name, form, kinds, helper_package, monkeypatch):
    _assert_rewritten_or_reported(snippet(name, form), 2, kinds, helper_package, monkeypatch, name)


def test_the_mapped_apis_are_rewritten_and_run(kinds, helper_package, monkeypatch):
    """The ones with an MPS counterpart (docs/porting-facts.md) are rewritten, not just reported."""
    mapped = [
        "torch.cuda.empty_cache",
        "torch.cuda.synchronize",
        "torch.cuda.is_available",
        "torch.cuda.device_count",
        "torch.cuda.manual_seed",
        "torch.cuda.memory_allocated",
        "torch.cuda.memory_reserved",
        "torch.cuda.mem_get_info",
        "torch.cuda.is_bf16_supported",
        "torch.cuda.set_per_process_memory_fraction",
        "torch.cuda.get_device_properties",
        "torch.cuda.current_device",
    ]
    for name in mapped:
        source = snippet(name, "call")
        assert _assert_rewritten_or_reported(source, 2, kinds, helper_package, monkeypatch, name) == "rewritten", name
    namespace = run_without_cuda(
        port(snippet("torch.cuda.mem_get_info", "call"), kinds).code.decode(), helper_package, monkeypatch
    )
    assert namespace["result"] == (0, 0)  # on cpu: nothing to report, and no exception


# Call forms of the Tensor/Module CUDA methods and of the device-taking torch functions.
FORMS = [
    ("x = torch.zeros(2)\ny = x.cuda()", "rewritten"),
    ("x = torch.zeros(2)\ny = x.cuda(0)", "rewritten"),
    ("x = torch.zeros(2)\ny = x.cuda(non_blocking=True)", "rewritten"),
    ("x = torch.zeros(2)\ny = x.cuda(1, non_blocking=True)", "rewritten"),
    ("x = torch.zeros(2)\ny = x.cuda(device=1)", "rewritten"),
    ("x = torch.zeros(2)\ny = x.cuda('cuda:1')", "rewritten"),
    ("m = torch.nn.Linear(2, 2)\ny = m.cuda(0)", "rewritten"),
    ("gpu = 0\ny = torch.zeros(2).cuda(gpu)", "reported"),
    ("gpu = 0\ny = torch.zeros(2).cuda(device=gpu)", "reported"),
    ("args = ()\ny = torch.zeros(2).cuda(*args)", "reported"),
    ("x = torch.zeros(2)\ny = x.is_cuda", "reported"),
    ("x = torch.zeros(2)\ny = x.pin_memory()", "reported"),
    ("x = []\ny = torch.utils.data.DataLoader(x, pin_memory=True)", "reported"),
    ("x = None\ny = torch.autocast('cuda')", "reported"),
    ("x = None\ny = torch.autocast(device_type='cuda', dtype=torch.float16)", "reported"),
    ("x = None\ny = torch.amp.autocast('cuda')", "reported"),
    ("x = None\ny = torch.amp.GradScaler('cuda')", "reported"),
    ("x = None\ntorch.set_default_tensor_type(torch.cuda.FloatTensor)", "reported"),
    ("x = None\ntorch.set_default_tensor_type('torch.cuda.HalfTensor')", "reported"),
    ("x = None\ntorch.set_default_device('cuda')", "reported"),
    ("x = None\nencoder = Encoder(256, 'cuda:0')", "reported"),
    ("x = None\nencoder = build(backend='cuda')", "reported"),
]


@pytest.mark.parametrize(("body", "expected"), FORMS, ids=[body.splitlines()[-1] for body, _ in FORMS])
def test_every_call_form_is_rewritten_or_reported(body, expected, kinds, helper_package, monkeypatch):
    source = "import torch\n" + body + "\n"
    outcome = _assert_rewritten_or_reported(source, 3, kinds, helper_package, monkeypatch, ".cuda(")
    assert outcome == expected, port(source, kinds).code.decode()


# ---------------------------------------------------------------------------------------------
# The invariant: after apply, every CUDA mention on the inference path is accounted for


def _inference_mentions(tree: Path, pack, profile_name: str | None = None):
    profile, _ = detect(tree, pack, profile_name)
    mentions = []
    for rel in walk(tree):
        if rel.endswith(".py") and rel != profile.runtime_path and path_matches(rel, profile.inference_path):
            mentions += account(rel, (tree / rel).read_bytes(), pack.detectors())
    return mentions


def _applied_copy(source: Path, tmp_path: Path, pack, profile_name: str | None = None) -> Path:
    tree = tmp_path / source.name
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git", ".lsync-port"), symlinks=True)
    commit(make_plan(tree, pack, profile_name))
    return tree


@pytest.mark.parametrize("fixture", ["latentsync", "latentsync-1.0", "latentsync-1.5", "comfyui-latentsyncwrapper"])
def test_after_apply_every_cuda_mention_is_accounted_for(fixture, tmp_path, pack):
    before = _inference_mentions(FIXTURES / fixture, pack)
    assert sum(m.how == "reported" for m in before) >= 5, "the fixture has CUDA ties to port"
    tree = _applied_copy(FIXTURES / fixture, tmp_path, pack)
    after = _inference_mentions(tree, pack)
    assert unaccounted(after) == [], "\n".join(f"{m.path}:{m.line}: {m.code}" for m in unaccounted(after))


def test_the_accounting_can_fail():
    """Without the finders' findings, a CUDA call is unaccounted: the check above is not vacuous."""
    source = b"import torch\ntorch.cuda.empty_cache()\nprint('on cuda')\n"
    mentions = account("x.py", source, DETECTORS, findings=[])
    assert [(m.line, m.how) for m in mentions] == [(2, "unaccounted"), (3, "text")]
    assert [(m.line, m.how) for m in account("x.py", source, DETECTORS)] == [(2, "reported"), (3, "text")]


def _real_trees():
    trees = []
    for variable, profile in (("LSYNC_UPSTREAM", "latentsync"), ("LSYNC_COMFY", "comfyui-latentsyncwrapper")):
        for part in filter(None, os.environ.get(variable, "").split(os.pathsep)):
            trees.append(pytest.param(Path(part), profile, id=f"{variable}:{Path(part).name}"))
    return trees


@pytest.mark.upstream
@pytest.mark.skipif(not _real_trees(), reason="set LSYNC_UPSTREAM / LSYNC_COMFY to real checkouts to run this")
@pytest.mark.parametrize(("source", "profile"), _real_trees() or [pytest.param(None, None, id="none")])
def test_after_apply_every_cuda_mention_is_accounted_for_on_a_real_tree(source, profile, tmp_path, pack):
    # Before the port, not after: a ported 1.5 has no CUDA mention left on its inference path at all.
    assert _inference_mentions(source, pack, profile), "a real tree mentions CUDA"
    tree = _applied_copy(source, tmp_path, pack, profile)
    after = _inference_mentions(tree, pack, profile)
    assert unaccounted(after) == [], "\n".join(f"{m.path}:{m.line}: {m.code}" for m in unaccounted(after))
