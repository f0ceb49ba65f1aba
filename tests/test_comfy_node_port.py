"""The wrapper node's Mac-stack port on the fixture (issue 20): the import-time clean-up that
deletes `temp` beside the ComfyUI root, and a nodes.py of a shape the rules do not know (a clear
finding that names the file and what was expected, never a silent skip)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.port.planning import make_plan
from latentsync_mps.port.scanning import scan
from latentsync_mps.port.transaction import commit

# ComfyUI's folder_paths.py, as far as the node uses it: it lies in the ComfyUI root and keeps the
# temp directory in `temp_directory` (ComfyUI's --temp-directory sets it).
FOLDER_PATHS = """
import os
base_path = os.path.dirname(os.path.realpath(__file__))
temp_directory = os.path.join(base_path, "temp")
def get_temp_directory():
    return temp_directory
"""

# Imports the node package as ComfyUI does (custom_nodes on the path, the folder as a package).
# torchaudio is stood in for: the clean-up runs when the module loads, after `import torchaudio`,
# and this test is about the clean-up, not about which stack has torchaudio.
LOAD = """
import sys, types
comfy_root, package = sys.argv[1], sys.argv[2]
sys.path[:0] = [comfy_root, comfy_root + "/custom_nodes"]
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
__import__(package)
"""


def comfy_home(tmp_path: Path, ported: bool, pack) -> tuple[Path, Path]:
    """(home, ComfyUI root): ~/ComfyUI with the fixture node in custom_nodes, and a `temp` and a
    `temp_backup_*` of the user's in ~, beside the ComfyUI root."""
    home = tmp_path / "home"
    root = home / "ComfyUI"
    node = root / "custom_nodes" / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", node)
    if ported:
        commit(make_plan(node, pack))
    (root / "folder_paths.py").write_text(FOLDER_PATHS)
    for folder in (home / "temp", home / "temp_backup_1a2b3c4d", root / "temp", root / "temp_backup_5e6f7a8b"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("the user's")
    return home, root


def load_node(root: Path) -> None:
    command = [sys.executable, "-c", LOAD, str(root), "ComfyUI-LatentSyncWrapper"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("ported", [False, True], ids=["unported", "ported"])
def test_temp_beside_the_comfyui_root_is_deleted_by_the_unported_node_only(tmp_path, pack, ported):
    pytest.importorskip("omegaconf", reason="the node imports omegaconf: the verify extra installs it")
    home, root = comfy_home(tmp_path, ported, pack)
    load_node(root)
    outside = [home / "temp" / "keep.txt", home / "temp_backup_1a2b3c4d" / "keep.txt"]
    if ported:
        assert all(path.exists() for path in outside)  # the user's folders beside ComfyUI survive
        # The node now cleans ComfyUI's own temp directory, as ComfyUI does itself at start-up.
        assert not (root / "temp").exists() and not (root / "temp_backup_5e6f7a8b").exists()
    else:
        assert not any(path.exists() for path in outside)  # upstream's behaviour: ~/temp is gone
        assert (root / "temp" / "keep.txt").exists()


def test_ported_node_follows_comfyuis_temp_directory_option(tmp_path, pack):
    """`--temp-directory D` makes ComfyUI's temp folder D/temp: the ported node cleans that one."""
    home, root = comfy_home(tmp_path, True, pack)
    elsewhere = tmp_path / "scratch"
    (elsewhere / "temp").mkdir(parents=True)
    (elsewhere / "notes").mkdir()
    (root / "folder_paths.py").write_text(FOLDER_PATHS + f"temp_directory = {str(elsewhere / 'temp')!r}\n")
    load_node(root)
    assert not (elsewhere / "temp").exists() and (elsewhere / "notes").is_dir()
    assert (home / "temp" / "keep.txt").exists() and (root / "temp" / "keep.txt").exists()


def unknown_shape(tree: Path) -> None:
    """The clean-up and the save call written in forms the rules do not rewrite."""
    nodes = tree / "nodes.py"
    text = nodes.read_bytes()
    for old, new in [
        (
            b"comfy_dir = os.path.dirname(os.path.dirname(os.path.abspath(folder_paths.__file__)))",
            b"comfy_dir = Path(folder_paths.__file__).resolve().parent.parent",
        ),
        (
            b"torchaudio.save(audio_path, waveform.cpu(), sample_rate)",
            b"write_audio = torchaudio.save\r\n        write_audio(audio_path, waveform.cpu(), sample_rate)",
        ),
    ]:
        assert old in text
        text = text.replace(old, new)
    nodes.write_bytes(text.replace(b"import tempfile\r\n", b"import tempfile\r\nfrom pathlib import Path\r\n", 1))


def test_a_nodes_py_of_unknown_shape_is_named_with_what_was_expected(tmp_path, pack):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    unknown_shape(tree)
    plan = make_plan(tree, pack)
    drift = {(d.rule_id, d.file) for d in plan.drift}
    assert {("comfyui-temp-inside", "nodes.py"), ("torchaudio-io", "nodes.py")} <= drift
    residue = {f.kind: f for f in plan.residue if f.path == "nodes.py"}
    outside = residue["outside-comfyui"]
    assert outside.code == "Path(folder_paths.__file__).resolve().parent.parent"
    assert "os.path.dirname(os.path.dirname(os.path.abspath(folder_paths.__file__)))" in outside.fix
    assert "folder_paths.get_temp_directory()" in outside.fix
    # The save that no rule recognised keeps torchaudio in use, so its import stays and is named.
    kept = residue["load-time-import"]
    assert kept.code == "import torchaudio" and "port its calls" in kept.fix
    result = CliRunner().invoke(app, ["apply", str(tree), "--strict", "--json"])
    assert result.exit_code == 6  # --strict: drift and residue refuse
    report = json.loads(result.output)
    assert any(d["rule_id"] == "comfyui-temp-inside" and d["file"] == "nodes.py" for d in report["drift"])


def test_the_fixture_nodes_py_has_every_pattern_and_no_finding_is_left(tmp_path, pack):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    shutil.copytree(FIXTURES / "comfyui-latentsyncwrapper", tree)
    before = scan(tree, pack)
    kinds = {f.kind for f in before.findings if f.path == "nodes.py"}
    assert {"media-io", "load-time-import", "ffmpeg-on-path", "outside-comfyui"} <= kinds
    plan = make_plan(tree, pack)
    assert plan.drift == [] and plan.residue == []
    commit(plan)
    ported = (tree / "nodes.py").read_text()
    imported = {
        alias.name for node in ast.walk(ast.parse(ported)) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {name for name in imported if name.startswith(("torchaudio", "torchvision"))}  # loads without them
    for call in ("save_audio(", "resampler(", "write_video(", "read_video(", "ffmpeg()", "comfyui_temp_directory("):
        assert f"_lsync_port.{call}" in ported
