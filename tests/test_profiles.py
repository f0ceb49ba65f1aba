"""Both profiles on a from-scratch fixture of every release's shape: LatentSync 1.0, 1.5, 1.6 and
main, and ComfyUI-LatentSyncWrapper. For each: the release is recognised, apply ports it with no
drift and no residue, the tree compiles, scan finds nothing left on the inference path, a second
apply is a no-op, revert restores every byte; and every rule of both profiles matches somewhere.

The opt-in tests in test_upstream.py run the same checks on real checkouts.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURES, tree_hashes

from latentsync_mps.pack.errors import RuleFileError
from latentsync_mps.port import scanning, transaction, transform
from latentsync_mps.port.detection import detect
from latentsync_mps.port.planning import Plan, make_plan
from latentsync_mps.port.rulepack import load


def profile_covers(profile, relpath: str) -> bool:
    from latentsync_mps.pack.rule import path_matches

    return path_matches(relpath, profile.inference_path)


def make_main(target: Path) -> None:
    """LatentSync main = 1.6 plus `--enable_deepcache` in scripts/inference.py (its fingerprint)."""
    script = target / "scripts" / "inference.py"
    lines = script.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if "parser.add_argument(" in line:
            indent = line[: len(line) - len(line.lstrip())]
            lines.insert(index, f'{indent}parser.add_argument("--enable_deepcache", action="store_true")\n')
            break
    else:
        lines.append("\n# --enable_deepcache\n")
    script.write_text("".join(lines))


# name -> (fixture folder, extra step, profile, release, error kinds scan must find before apply)
TREES = {
    "1.0": (
        "latentsync-1.0",
        None,
        "latentsync",
        "1.0",
        {"xformers", "fp16-hardcoded", "fp16-default", "cpu-branch", "interpolate-fp16", "cuda-literal", "torch-cuda"},
    ),
    "1.5": (
        "latentsync-1.5",
        None,
        "latentsync",
        "1.5",
        {"sdpa-pin", "fp16-default", "cpu-branch", "interpolate-fp16", "cuda-literal", "torch-cuda", "no-mac-wheel"},
    ),
    "1.6": (
        "latentsync",
        None,
        "latentsync",
        "1.6",
        {"onnx-cuda-provider", "cuda-only-check", "cpu-branch", "fp16-hardcoded", "cuda-literal", "torch-cuda"},
    ),
    "main": (
        "latentsync",
        make_main,
        "latentsync",
        "main",
        {"onnx-cuda-provider", "cuda-only-check", "cpu-branch", "fp16-hardcoded", "cuda-literal", "torch-cuda"},
    ),
    "wrapper": (
        "comfyui-latentsyncwrapper",
        None,
        "comfyui-latentsyncwrapper",
        "wrapper-360d528",
        {"cuda-flag", "cuda-branch", "torch-cuda", "onnx-cuda-provider", "cpu-branch", "no-mac-wheel"},
    ),
}


@dataclass
class Outcome:
    tree: Path
    profile: str = ""
    release: str | None = None
    before_kinds: set[str] = field(default_factory=set)
    plan: Plan | None = None
    compile_errors: list[str] = field(default_factory=list)
    after_errors: list = field(default_factory=list)
    second_writes: list = field(default_factory=list)
    second_drift: list = field(default_factory=list)
    pristine: dict = field(default_factory=dict)
    patched: dict = field(default_factory=dict)
    reverted: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, pack) -> dict[str, Outcome]:
    """Port every fixture once; the tests below look at what happened."""
    results = {}
    for name, (folder, extra, _, _, _) in TREES.items():
        tree = tmp_path_factory.mktemp(name) / folder
        shutil.copytree(FIXTURES / folder, tree)
        if extra is not None:
            extra(tree)
        out = Outcome(tree, pristine=tree_hashes(tree))
        profile, release = detect(tree, pack)
        out.profile, out.release = profile.name, release.name if release else None
        before = scanning.scan(tree, pack)
        out.before_kinds = {f.kind for f in before.findings if f.severity == "error" and before.in_scope(f)}
        out.plan = make_plan(tree, pack)
        transaction.commit(out.plan)
        out.patched = tree_hashes(tree)
        for path in sorted(tree.rglob("*.py")):
            try:
                compile(path.read_bytes(), str(path), "exec")
            except SyntaxError as error:
                out.compile_errors.append(f"{path.relative_to(tree)}: {error}")
        # What scan would say now: unchanged files were already checked by apply (plan.findings).
        for written in out.plan.files:
            if written.path != profile.runtime_path and profile_covers(profile, written.path):
                data = (tree / written.path).read_bytes()
                out.after_errors += [
                    f for f in transform.find(written.path, data, pack.detectors()) if f.severity == "error"
                ]
        again = make_plan(tree, pack)
        out.second_writes, out.second_drift = again.writes, again.drift
        transaction.commit(again)
        assert tree_hashes(tree) == out.patched
        transaction.revert(tree)
        out.reverted = tree_hashes(tree)
        results[name] = out
    return results


@pytest.mark.parametrize("name", TREES)
def test_release_is_recognised(outcomes, name):
    _, _, profile, release, _ = TREES[name]
    assert (outcomes[name].profile, outcomes[name].release) == (profile, release)


@pytest.mark.parametrize("name", TREES)
def test_scan_finds_the_release_specific_constructs_before_apply(outcomes, name):
    missing = TREES[name][4] - outcomes[name].before_kinds
    assert not missing, f"scan did not find {missing} in the unported {name} fixture"


@pytest.mark.parametrize("name", TREES)
def test_apply_ports_with_no_drift_no_residue_and_the_tree_compiles(outcomes, name):
    plan = outcomes[name].plan
    assert plan.drift == [], [(d.rule_id, d.file, d.found) for d in plan.drift]
    assert plan.residue == [], [(f.path, f.line, f.kind) for f in plan.residue]
    assert plan.problems == []
    assert outcomes[name].compile_errors == []
    assert outcomes[name].after_errors == [], [(f.path, f.line, f.kind) for f in outcomes[name].after_errors]


@pytest.mark.parametrize("name", TREES)
def test_second_apply_is_a_no_op_and_revert_restores_every_byte(outcomes, name):
    out = outcomes[name]
    assert out.second_writes == [] and out.second_drift == []
    assert out.reverted == out.pristine
    changed = {f.path for f in out.plan.files}
    assert {rel for rel in out.pristine if out.patched.get(rel) != out.pristine[rel]} <= changed


def test_every_rule_of_both_profiles_is_exercised(outcomes, pack):
    """CI runs every rule on some fixture, without the upstream code."""
    matched: dict[str, Counter[str]] = {}
    for out in outcomes.values():
        matched.setdefault(out.profile, Counter()).update(out.plan.matches)
    latentsync = {r.id for r in pack.profiles["latentsync"].rules}
    assert latentsync - set(matched["latentsync"]) == set()
    wrapper = pack.profiles["comfyui-latentsyncwrapper"]
    own = {r.id for r in wrapper.rules} - latentsync
    assert own and own - set(matched["comfyui-latentsyncwrapper"]) == set()
    # The vendored tree's rules run on the wrapper too: every one expected there matched.
    version = wrapper.releases[-1].version
    expected = {
        r.id
        for r in wrapper.rules
        if r.covers_release(version)
        and any(e.profile in (None, wrapper.name) and e.releases.contains(version) for e in r.expect)
    }
    assert expected - set(matched["comfyui-latentsyncwrapper"]) == set()


def test_release_specific_rewrites(outcomes):
    def new(name, path):
        plan = outcomes[name].plan
        return next(f.new for f in plan.files if f.path == path).decode("utf-8")

    script = new("1.0", "scripts/inference.py")
    assert "torch.float16" not in script and "_lsync_port.xformers_available()" in script
    assert '_lsync_port.device_type() != "cuda"' in new("1.0", "latentsync/models/attention.py")
    assert "_lsync_port.runs_face_detection(device)" in new("1.0", "latentsync/utils/image_processor.py")
    requirements = new("1.0", "requirements.txt")
    assert 'xformers==0.0.23.post1; platform_system != "Darwin"' in requirements
    assert 'av>=12; platform_system == "Darwin"' in requirements

    for path in ("latentsync/models/attention.py", "latentsync/models/motion_module.py"):
        text = new("1.5", path)
        assert "with _lsync_port.sdpa_kernel(SDPBackend.FLASH_ATTENTION):" in text
        assert "_lsync_port.scaled_dot_product_attention(" in text
    assert "_lsync_port.vae_encode(self.vae, " in new("1.5", "latentsync/pipelines/lipsync_pipeline.py")
    assert "whisper_fp16(model.device)" in new("1.5", "latentsync/whisper/whisper/transcribe.py")

    assert "return _lsync_port.onnx_ctx_id(cuda_str)" in new("1.6", "latentsync/utils/face_detector.py")
    assert "not _lsync_port.runs_face_detection(device)" in new("1.6", "latentsync/utils/image_processor.py")
    restore = new("1.6", "latentsync/utils/affine_transform.py")
    assert 'device="cpu", dtype=None):' in restore and "dtype = _lsync_port.restore_dtype(device)" in restore
    assert "_lsync_port.det(" in restore and "torch.det(" not in restore


# Issue 11 part 5 and issue 12: what every release's port must carry (each fails on the port before them).
NEW_REWRITES = {
    "latentsync/pipelines/lipsync_pipeline.py": (
        "weight_dtype: torch.dtype = None",
        "weight_dtype = _lsync_port.dtype()",
        "device=_lsync_port.face_device(device)",
        "_lsync_port.release_chunk_memory(decoded_latents)",
    ),
}


@pytest.mark.parametrize("name", TREES)
def test_every_release_decides_dtype_and_face_device_when_called(outcomes, name):
    files = {f.path: f.new.decode("utf-8") for f in outcomes[name].plan.files}
    pipeline = files["latentsync/pipelines/lipsync_pipeline.py"]
    for text in NEW_REWRITES["latentsync/pipelines/lipsync_pipeline.py"]:
        assert text in pipeline, (name, text)
    assert pipeline.count("_lsync_port.dtype()") == 1, "decided in the body only, never in a signature"
    assert "_lsync_port.interpolate(" in pipeline and "torch.nn.functional.interpolate(" not in pipeline
    # The 1.6 fixture (which the wrapper fixture vendors) resizes with F.interpolate, 1.0 and 1.5 with torchvision.
    assert ("_lsync_port.resize(" in pipeline) == (name in ("1.0", "1.5"))
    if name != "1.0":
        assert "dtype = _lsync_port.dtype()" in files["scripts/inference.py"]
    resnet = files["latentsync/models/resnet.py"]
    assert resnet.count("_lsync_port.interpolate(") == 2 and "F.interpolate(" not in resnet
    if name in ("1.6", "main", "wrapper"):
        detector = files["latentsync/utils/face_detector.py"]
        assert "def __init__(self, device=None):" in detector and "device = _lsync_port.device()" in detector


def test_wrapper_keeps_crlf_and_imports_the_helper_relatively_in_nodes(outcomes):
    plan = outcomes["wrapper"].plan
    files = {f.path: f.new for f in plan.files}
    nodes = files["nodes.py"]
    assert b"from .latentsync import _lsync_port\r\n" in nodes
    assert b"from latentsync import _lsync_port\r\n" in files["scripts/inference.py"]
    for path, data in files.items():
        if path.endswith(".py") and path != "latentsync/_lsync_port.py":
            lines = data.split(b"\n")[:-1]
            assert all(line.endswith(b"\r") for line in lines), f"{path} mixes line endings"
    assert not files["scripts/inference.py"].endswith(b"\n"), "the missing final newline is kept"
    text = nodes.decode()
    assert 'if _lsync_port.device_type() == "cuda":\r\n                torch.backends.cudnn.benchmark = True' in text
    assert 'result.device.type != "cpu"' in text and "torch.cuda" not in text


def test_ported_wrapper_node_imports_as_a_comfyui_package(tmp_path, pack, monkeypatch):
    """ComfyUI imports the node folder as a package; the ported nodes.py finds the helper."""
    pytest.importorskip("torch")
    tree = tmp_path / "LipSyncNodeFixture"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    transaction.commit(make_plan(tree, pack))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LATENTSYNC_DEVICE", "cpu")
    from latentsync_mps.payload.verify.comfy_contract import folder_paths_module

    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths_module(tmp_path / "ComfyUI"))
    try:
        package = importlib.import_module("LipSyncNodeFixture")
        node_class = package.NODE_CLASS_MAPPINGS["LatentSyncNode"]
        helper = sys.modules["LipSyncNodeFixture.latentsync._lsync_port"]
        assert helper.device() == "cpu"
        import torch

        assert torch.equal(node_class.process_batch(None, torch.full((2,), 255)), torch.ones(2))
    finally:
        for module in [m for m in sys.modules if m.split(".")[0] == "LipSyncNodeFixture"]:
            del sys.modules[module]


def test_wrapper_profile_includes_the_latentsync_pack(pack):
    wrapper = pack.profiles["comfyui-latentsyncwrapper"]
    ids = [r.id for r in wrapper.rules]
    assert {r.id for r in pack.profiles["latentsync"].rules} < set(ids)
    assert {"cuda-flags-cuda-only", "tensor-on-gpu-check"} < set(ids)
    assert all(r.profile == wrapper.name for r in wrapper.rules)
    assert wrapper.runtime_module_for("nodes.py") == ".latentsync._lsync_port"
    assert wrapper.runtime_module_for("latentsync/utils/util.py") == "latentsync._lsync_port"


def test_include_must_name_a_known_profile_and_not_nest(tmp_path):
    from latentsync_mps.pack.paths import patches_dir

    patches = tmp_path / "patches"
    shutil.copytree(patches_dir(), patches)
    profile = patches / "comfyui-latentsyncwrapper" / "profile.toml"
    text = profile.read_text()
    profile.write_text(text.replace('include = ["latentsync"]', 'include = ["nope"]'))
    with pytest.raises(RuleFileError, match="includes unknown or nested profile 'nope'"):
        load(patches)
    profile.write_text(text)
    base = patches / "latentsync" / "profile.toml"
    base.write_text(base.read_text() + '\ninclude = ["comfyui-latentsyncwrapper"]\n')
    with pytest.raises(RuleFileError, match="nested"):
        load(patches)


def test_chunking_rules_can_be_left_out_with_rules(tmp_path, pack):
    tree = tmp_path / "latentsync"
    shutil.copytree(FIXTURES / "latentsync-1.5", tree)
    everything = [r.id for r in pack.profiles["latentsync"].rules]
    without = [i for i in everything if i not in ("mps-attention-chunks", "mps-vae-chunks")]
    plan = make_plan(tree, pack, rule_ids=without)
    attention = next(f.new for f in plan.files if f.path == "latentsync/models/attention.py").decode()
    assert "F.scaled_dot_product_attention(" in attention and "_lsync_port.sdpa_kernel" in attention
    assert plan.residue == []  # memory on MPS is a warning, not residue


@pytest.mark.parametrize("name", ["1.0", "1.5", "1.6", "main"])
def test_the_trees_own_scripts_are_ported_for_a_mac(outcomes, name):
    """Issue 12 item 8: setup_env.sh runs apt on Linux only and falls back to Homebrew for ffmpeg;
    both scripts say what the Mac gets. The wrapper has no shell scripts."""
    plan = outcomes[name].plan
    written = {f.path: f.new.decode("utf-8") for f in plan.files}
    setup, inference = written["setup_env.sh"], written["inference.sh"]
    assert 'if [ "$(uname)" != "Darwin" ]; then sudo apt -y install libgl1; fi' in setup
    homebrew = '|| { [ "$(uname)" = "Darwin" ] && brew install ffmpeg; }'
    assert f"conda install -y -c conda-forge ffmpeg {homebrew}" in setup
    assert "# On a Mac (lsync-port): requirements.txt is ported for macOS" in setup
    assert ("insightface 0.7.3" in setup) is (name in ("1.6", "main"))
    assert inference.index("# On a Mac (lsync-port): runs on mps") < inference.index("python -m scripts.inference")
    assert plan.matches["shell-inference-memory-note"] == 1
