"""`lsync-port targets`: what the tool knows (torch tables with their macOS, host stacks, upstream
releases, what the sources served when last checked), each with its source and date."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack.paths import bundled_patches_dir

FIXTURE_STACKS = Path(__file__).parent / "fixtures" / "targets" / "stacks.toml"
runner = CliRunner()


@pytest.fixture
def patches(tmp_path, monkeypatch):
    """A copy of the shipped patches/ with the fixture host stacks in it (LSYNC_PORT_PATCHES)."""
    root = tmp_path / "patches"
    shutil.copytree(bundled_patches_dir(), root)
    shutil.copy(FIXTURE_STACKS, root / "stacks.toml")
    monkeypatch.setenv("LSYNC_PORT_PATCHES", str(root))
    return root


def test_json_lists_mac_torch_releases_with_their_minimum_macos_and_wheel(patches):
    result = runner.invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    torch = {r["torch"]: r for r in data["torch"]["releases"]}
    for version in ("2.12.0", "2.13.0", "2.14.1"):
        assert torch[version]["min_macos"] == "14.0"
        assert torch[version]["source"] == f"macOS arm64 wheel {torch[version]['wheel']}"
        assert "macosx_14_0_arm64" in torch[version]["wheel"]
        assert torch[version]["built"].startswith("2026-")
    assert torch["2.5.1"]["min_macos"] == "11.0"
    assert data["torch"]["checked"] == data["watched"]["checked"]


def test_json_lists_host_stacks_and_upstreams_with_source_and_date(patches):
    data = json.loads(runner.invoke(app, ["targets", "--json"]).output)
    stacks = {s["name"]: s for s in data["host_stacks"]["stacks"]}
    assert stacks["fixture-desktop"]["packages"]["torch"] == "2.10.0"
    assert (stacks["fixture-desktop"]["checked"], stacks["fixture-manual"]["python"]) == ("2026-01-02", "3.11")
    assert data["host_stacks"]["note"] is None
    upstreams = {u["name"]: u for u in data["upstreams"]}
    assert (upstreams["1.6"]["commit"], upstreams["1.6"]["date"]) == ("d058a61", "2025-06-11")
    assert upstreams["wrapper-360d528"]["repository"] == "https://github.com/ShmuelRonen/ComfyUI-LatentSyncWrapper"
    assert data["watched"]["refresh"] == "python scripts/check_targets.py --refresh"
    assert data["watched"]["desktop"]["path"] == "assets/requirements/macos.compiled"


def test_text_shows_every_kind_of_target(patches):
    result = runner.invoke(app, ["targets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "torch-2.14.1-cp311-cp311-macosx_14_0_arm64.whl" in text and "14.0" in text
    assert "fixture-desktop: a bundled app's own environment" in text
    assert "wrapper-556b673" in text and "2025-05-20" in text
    assert "Refresh all of it: `python scripts/check_targets.py --refresh`" in text


def test_a_missing_stacks_file_lists_no_stacks_and_says_so(patches):
    (patches / "stacks.toml").unlink()
    data = json.loads(runner.invoke(app, ["targets", "--json"]).output)
    assert data["host_stacks"]["stacks"] == []
    assert data["host_stacks"]["note"] == "no host stacks known: patches/stacks.toml is missing"
    result = runner.invoke(app, ["targets"], env={"COLUMNS": "200"})
    assert (
        result.exit_code == 0 and "Host stacks: no host stacks known: patches/stacks.toml is missing." in result.output
    )


def test_help_teaches_what_the_list_means():
    result = runner.invoke(app, ["targets", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert '"min macOS" is the oldest macOS the wheel installs on' in text and "macOS arm64 wheel" in text


def test_wheel_names_are_never_folded_at_80_columns(patches):
    """A wheel's name is pasted into pip: at 80 columns the other columns give way."""
    result = runner.invoke(app, ["targets"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "torch-2.14.1-cp311-cp311-macosx_14_0_arm64.whl" in result.output
