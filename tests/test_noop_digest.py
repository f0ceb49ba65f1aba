"""The no-op digest (a re-apply that finds it unchanged does no work) does not depend on where
lsync-port, and so its rule files, are installed (issue 13, part 4)."""

from __future__ import annotations

import shutil

from latentsync_mps import engine
from latentsync_mps.resources import patches_dir
from latentsync_mps.ruleset import load


def test_the_digest_is_the_same_for_rules_installed_elsewhere(tmp_path):
    here, there = load(patches_dir()), load(shutil.copytree(patches_dir(), tmp_path / "elsewhere" / "patches"))
    rules_here = here.profiles["latentsync"].rules
    rules_there = there.profiles["latentsync"].rules
    assert rules_here[0].source != rules_there[0].source, "loaded from two places"
    files = {"scripts/inference.py": b"x = 1\n", "latentsync/_lsync_port.py": None}
    assert engine._digest(rules_here, files) == engine._digest(rules_there, files)


def test_the_digest_still_sees_a_changed_rule(tmp_path):
    there = shutil.copytree(patches_dir(), tmp_path / "patches")
    rule_file = there / "latentsync" / "device.toml"
    rule_file.write_text(rule_file.read_text().replace('"map_location"]', '"map_location", "gpu"]', 1))
    here_rules = load(patches_dir()).profiles["latentsync"].rules
    there_rules = load(there).profiles["latentsync"].rules
    assert engine._digest(here_rules, {}) != engine._digest(there_rules, {})
