"""Release facts (`[release.facts]` in patches/upstreams.toml): validated on load, and really read by
doctor, verify's runner and its harness: a fact changed in a copied pack changes what they do."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.features import doctor
from latentsync_mps.features.doctor import catalog
from latentsync_mps.features.doctor import facts as doctor_facts
from latentsync_mps.features.doctor import tree_facts as doctor_tree
from latentsync_mps.features.verify import runner
from latentsync_mps.host.child import ChildRun
from latentsync_mps.pack import release_facts
from latentsync_mps.pack.errors import RuleFileError
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.payload.protocol import Spec
from latentsync_mps.payload.verify import comfy_node
from latentsync_mps.payload.verify import release as verify_release
from latentsync_mps.payload.verify import weights as verify_weights
from latentsync_mps.payload.verify.state import State
from latentsync_mps.port.rulepack import load


@pytest.fixture
def copied_pack(tmp_path, monkeypatch) -> Path:
    """The shipped rule packs, copied, and made the ones in use."""
    patches = tmp_path / "patches"
    shutil.copytree(patches_dir(), patches)
    monkeypatch.setenv("LSYNC_PORT_PATCHES", str(patches))
    return patches


def change_fact(patches: Path, release: str, key: str, old: str, new: str) -> None:
    """Replace `key = old` with `key = new` in the facts of `release` only."""
    path = patches / "upstreams.toml"
    text = path.read_text()
    start = text.index(f'name = "{release}"')
    end = text.find("[[release]]", start)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert f"{key} = {old}\n" in block
    path.write_text(text[:start] + block.replace(f"{key} = {old}\n", f"{key} = {new}\n") + text[end:])


def test_every_latentsync_release_has_facts_and_the_wrapper_none():
    pack = load(patches_dir())
    facts = {r.name: r.facts for r in pack.profiles["latentsync"].releases}
    assert set(facts) == {"1.0", "1.5", "1.6", "main"} and all(facts.values())
    assert [facts[r].face_detection for r in ("1.0", "1.5", "1.6", "main")] == [
        "face_alignment",
        "face_alignment",
        "insightface",
        "insightface",
    ]
    assert facts["1.6"].whisper_for(768) == "small" and facts["1.6"].whisper_for(384) == "tiny"
    assert all(r.facts is None for r in pack.profiles["comfyui-latentsyncwrapper"].releases)


@pytest.mark.parametrize(
    ("key", "old", "new", "said"),
    [
        ("resolution", "512", '"big"', "facts.resolution: expected a positive number of pixels, got 'big'"),
        ("resolution", "512", "true", "facts.resolution: expected a positive number of pixels, got True"),
        ("face_detection", '"insightface"', '"dlib"', "facts.face_detection: expected one of face_alignment"),
        ("whole_chunks", "false", '"no"', "facts.whole_chunks: expected true or false, got 'no'"),
        ("whisper_by_width", '{ 768 = "small" }', "{ wide = 1 }", "facts.whisper_by_width.wide: expected"),
        ("memory_need_gb", "18.0", '"lots"', "facts.memory_need_gb: expected a positive number of GB, got 'lots'"),
        ("memory_need_gb", "18.0", "0", "facts.memory_need_gb: expected a positive number of GB, got 0"),
        ("reference_for_resolution", "true", '"yes"', "facts.reference_for_resolution: expected true or false"),
    ],
)
def test_bad_facts_are_one_line_naming_file_release_and_key(copied_pack, key, old, new, said):
    change_fact(copied_pack, "1.6", key, old, new)
    with pytest.raises(RuleFileError) as caught:
        load(copied_pack)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{copied_pack / 'upstreams.toml'}: release '1.6', ")
    assert said in message


def test_an_unknown_or_missing_fact_is_named(copied_pack):
    shipped = (copied_pack / "upstreams.toml").read_text()
    change_fact(copied_pack, "1.0", "resolution", "256", '256\ncolour = "blue"')
    with pytest.raises(RuleFileError, match=r"release '1.0', facts.colour: unknown key"):
        load(copied_pack)
    (copied_pack / "upstreams.toml").write_text(shipped.replace('vae = "stabilityai/sd-vae-ft-mse"\n', "", 1))
    with pytest.raises(RuleFileError, match=r"release '1.0', facts.vae: missing"):
        load(copied_pack)


def test_the_cli_gives_one_line_for_bad_facts(copied_pack, tmp_path):
    change_fact(copied_pack, "main", "resolution", "512", "-1")
    result = CliRunner().invoke(app, ["scan", str(tmp_path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "facts.resolution" in lines[0] and "upstreams.toml" in lines[0], result.output


def test_doctor_reads_the_facts_of_the_pack_in_use(copied_pack):
    tree_15 = {"tree": {"profile": "latentsync", "release": "1.5", "error": None}}
    assert doctor_facts.needs_insightface(tree_15) is False
    names = [c.path for c in catalog.checkpoints("latentsync", "1.5")]
    assert not any("buffalo_l" in name for name in names)
    assert catalog.DEFAULT_RESOLUTION["1.5"] == 256

    change_fact(copied_pack, "1.5", "face_detection", '"face_alignment"', '"insightface"')
    change_fact(copied_pack, "1.5", "resolution", "256", "384")
    change_fact(copied_pack, "1.5", "weights_repo", '"ByteDance/LatentSync-1.5"', '"someone/weights"')
    assert doctor_facts.needs_insightface(tree_15) is True
    entries = catalog.checkpoints("latentsync", "1.5")
    assert any("buffalo_l" in e.path for e in entries)
    assert entries[0].repo == "someone/weights"
    assert catalog.DEFAULT_RESOLUTION["1.5"] == 384


def test_doctor_picks_whisper_and_vae_by_the_facts(copied_pack, tmp_path):
    facts = {"path": str(tmp_path), "profile": "latentsync", "release": "1.6", "config": {"cross_attention_dim": 768}}
    doctor_tree.add_checkpoints(facts, None)
    assert "checkpoints/whisper/small.pt" in [e["path"] for e in facts["checkpoints"]]
    assert doctor_tree.gather_vae({"hf_hub": str(tmp_path)}, "latentsync", "1.6")["repo"] == "stabilityai/sd-vae-ft-mse"

    change_fact(copied_pack, "1.6", "whisper_by_width", '{ 768 = "small" }', '{ 768 = "medium" }')
    change_fact(copied_pack, "1.6", "vae", '"stabilityai/sd-vae-ft-mse"', '"someone/vae"')
    doctor_tree.add_checkpoints(facts, None)
    assert "checkpoints/whisper/medium.pt" in [e["path"] for e in facts["checkpoints"]]
    assert doctor_tree.gather_vae({"hf_hub": str(tmp_path)}, "latentsync", "1.6")["repo"] == "someone/vae"


def test_the_runner_writes_the_detected_releases_facts_into_the_spec(copied_pack, fixture_tree, monkeypatch):
    change_fact(copied_pack, "1.6", "vae", '"stabilityai/sd-vae-ft-mse"', '"someone/vae"')
    seen = {}

    def child(script, spec, tree, python, timeout, on_event=None):
        seen.update(spec.to_json())
        return ChildRun({}, False, {}, 1, [])

    monkeypatch.setattr(runner, "run_child", child)
    runner.run_verify(fixture_tree, load(copied_pack), device="cpu", out_dir=fixture_tree.parent / "out")
    assert seen["release"] == "1.6"  # the fixture is 1.6-shaped
    assert seen["release_facts"]["detected"] is True and seen["release_facts"]["vae"] == "someone/vae"


def test_a_tree_of_no_known_release_gets_the_newest_facts_undetected():
    pack = load(patches_dir())
    wrapper = pack.profiles["comfyui-latentsyncwrapper"]
    facts = release_facts.spec_facts(pack, wrapper, wrapper.releases[0])
    assert facts["release"] == "main" and facts["detected"] is False


def test_the_harness_takes_whisper_vae_and_chunking_from_the_spec(tmp_path):
    (tmp_path / "checkpoints" / "whisper").mkdir(parents=True)
    (tmp_path / "checkpoints" / "latentsync_unet.pt").write_bytes(b"")
    (tmp_path / "checkpoints" / "whisper" / "medium.pt").write_bytes(b"")
    facts = release_facts.lookup("latentsync", "1.6").to_json() | {"detected": True}
    spec = Spec(tree=str(tmp_path), release_facts=facts | {"whisper": "medium", "vae": "someone/vae"})
    weights = verify_weights.real_weights(spec, {"model": {"cross_attention_dim": 384}})
    assert Path(weights["whisper"]).name == "medium.pt" and weights["vae"] == "someone/vae"
    with pytest.raises(verify_weights.check_run.CheckFailed, match="small.pt"):
        verify_weights.real_weights(spec, {"model": {"cross_attention_dim": 768}})  # whisper_by_width: small

    # No face_detector.py in this tree: a detected release's facts decide, not the files.
    assert verify_release.release_fact(spec, "whole_chunks") is False
    assert (
        verify_release.release_fact(replace(spec, release_facts=facts | {"whole_chunks": True}), "whole_chunks") is True
    )
    assert verify_release.release_fact(replace(spec, release_facts=facts | {"detected": False}), "whole_chunks") is True


def test_memory_needs_are_the_releases_published_figures(copied_pack):
    assert catalog.memory_need_gb(256) == 8.0 and catalog.memory_need_gb(512) == 18.0
    assert catalog.memory_need_gb(256, "1.0") == 6.5 and catalog.memory_need_gb(512, "1.0") == 18.0
    assert catalog.memory_need_gb(384) == 12.2  # by pixel count between 1.5's 256 and 1.6's 512
    assert catalog.memory_need_gb(1024) == 72.0  # 1.6's figure, scaled by pixel count

    change_fact(copied_pack, "1.6", "memory_need_gb", "18.0", "28.0")
    change_fact(copied_pack, "1.0", "memory_need_gb", "6.5", "5.0")
    assert catalog.memory_need_gb(512) == 28.0 and catalog.memory_need_gb(512, "1.6") == 28.0
    assert catalog.memory_need_gb(256, "1.0") == 5.0
    assert catalog.memory_need_gb(384) == 16.3


def test_a_bare_resolution_stands_for_the_release_marked_for_it(copied_pack):
    def guessed(resolution):
        forecast = doctor._forecast(None, {"tree": None, "resolution": {"value": resolution}}, live=None)
        return forecast and forecast["release"]

    assert (guessed(256), guessed(512), guessed(384)) == ("1.5", "1.6", None)
    change_fact(copied_pack, "1.6", "reference_for_resolution", "true", "false")
    path = copied_pack / "upstreams.toml"
    text = path.read_text()
    start = text.index('name = "main"')
    marked = "memory_need_gb = 18.0\nreference_for_resolution = true\n"
    path.write_text(text[:start] + text[start:].replace("memory_need_gb = 18.0\n", marked, 1))
    assert guessed(512) == "main"
    assert catalog.memory_need_gb(512) == 18.0


def test_the_wrappers_node_links_whisper_by_the_facts_name(tmp_path):
    tree = tmp_path / "ComfyUI-LatentSyncWrapper"
    (tree / "configs").mkdir(parents=True)
    (tree / "nodes.py").write_text("")
    weights = {name: tmp_path / f"{name}.bin" for name in ("unet", "whisper", "vae")}
    for path in weights.values():
        path.write_bytes(b"")
    facts = release_facts.lookup("latentsync", "main").to_json() | {"detected": False}
    spec = Spec(tree=str(tree), work=str(tmp_path / "work"), release_facts=facts | {"whisper": "base"})
    _, package = comfy_node.node_view(spec, State(weights=weights))
    assert (package / "checkpoints" / "whisper" / "base.pt").resolve() == weights["whisper"]
    assert not (package / "checkpoints" / "whisper" / "tiny.pt").exists()
