"""The README's and docs/usage.md's transcripts are what lsync-port prints now: scripts/gen_transcripts.py
runs the commands and writes them; this fails when a rule, a report or the example tree changed
since (other branches add rules: the one command to run is in the message)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_transcripts", REPO / "scripts" / "gen_transcripts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(generator):
    return generator.make()


def test_the_committed_transcripts_are_what_a_run_prints(generator, made):
    stale = generator.stale_blocks(made)
    assert not stale, f"stale transcripts: {', '.join(stale)}; refresh them with `{generator.REFRESH}`"


def test_every_transcript_has_its_place_and_real_figures(generator, made):
    names = {m.group("name") for page in generator.PAGES for m in generator.BLOCK.finditer(page.read_text())}
    assert names == set(generator.TRANSCRIPTS)
    assert "Written." in made["demo"] and "Written." in made["apply"] and "scan latentsync" in made["scan"]
    assert "/tmp" not in "".join(made.values()) and str(REPO) not in "".join(made.values())


def test_check_names_the_stale_block_and_the_command(generator, made, tmp_path, monkeypatch, capsys):
    page = tmp_path / "usage.md"
    page.write_text("text\n<!-- transcript:apply:start -->\nold output\n<!-- transcript:apply:end -->\n")
    monkeypatch.setattr(generator, "PAGES", [page])
    monkeypatch.setattr(generator, "REPO", tmp_path)
    monkeypatch.setattr(generator, "make", lambda: made)
    assert generator.main(["--check"]) == 1
    assert f"usage.md: transcript apply is stale; refresh it with `{generator.REFRESH}`" in capsys.readouterr().out
    assert generator.main([]) == 0 and made["apply"] in page.read_text()
    assert generator.main(["--check"]) == 0


def test_the_readme_says_which_extra_each_command_needs():
    text = (REPO / "README.md").read_text()
    assert "pip install 'lsync-port[verify]'" in text
    assert "`verify` and `forecast`" in text and "Every other command needs only `pip install .`" in text
