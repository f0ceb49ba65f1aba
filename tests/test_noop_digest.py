"""The no-op digest (a re-apply that finds it unchanged does no work) does not depend on where
lsync-port, and so its rule files, are installed (issue 13, part 4)."""

from __future__ import annotations

import shutil

from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.planning import _digest, make_plan
from latentsync_mps.port.rulepack import load
from latentsync_mps.port.transaction import commit


def test_the_digest_is_the_same_for_rules_installed_elsewhere(tmp_path):
    here, there = load(patches_dir()), load(shutil.copytree(patches_dir(), tmp_path / "elsewhere" / "patches"))
    rules_here = here.profiles["latentsync"].rules
    rules_there = there.profiles["latentsync"].rules
    assert rules_here[0].source != rules_there[0].source, "loaded from two places"
    files = {"scripts/inference.py": b"x = 1\n", "latentsync/_lsync_port.py": None}
    assert _digest(rules_here, files) == _digest(rules_there, files)


def test_the_digest_still_sees_a_changed_rule(tmp_path):
    there = shutil.copytree(patches_dir(), tmp_path / "patches")
    rule_file = there / "latentsync" / "device.toml"
    rule_file.write_text(rule_file.read_text().replace('"map_location"]', '"map_location", "gpu"]', 1))
    here_rules = load(patches_dir()).profiles["latentsync"].rules
    there_rules = load(there).profiles["latentsync"].rules
    assert _digest(here_rules, {}) != _digest(there_rules, {})


def test_a_changed_detection_rule_alone_makes_a_reapply_plan_again(fixture_tree, tmp_path):
    """Detection rules (patches/findings/) replace nothing, but what they report is the re-apply's
    residue and findings: changing only one of them must not be answered with the last report,
    neither by the early check (engine/noop.py) nor by the full plan's digest."""
    from latentsync_mps.port import noop

    commit(make_plan(fixture_tree, load(patches_dir())))
    assert make_plan(fixture_tree, load(patches_dir())).unchanged, "the case: an untouched re-apply is a no-op"
    there = shutil.copytree(patches_dir(), tmp_path / "patches")
    rules = there / "findings" / "python.toml"
    text = rules.read_text()
    old = 'summary = "Every use of a name under torch.cuda,'
    assert text.count(old) == 1
    rules.write_text(text.replace(old, 'summary = "Any use of a name under torch.cuda,'))
    changed = load(there)
    assert [r.id for r in changed.profiles["latentsync"].rules] == [
        r.id for r in load(patches_dir()).profiles["latentsync"].rules
    ]
    assert noop.stored_plan(fixture_tree, there) is None
    assert not make_plan(fixture_tree, changed).unchanged
