"""Rule packs are validated on load: every mistake names the file and the rule, exits 9, no traceback."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.pack.errors import RuleFileError
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.port.rulepack import load

GOOD_RULE = """
[[rule]]
id = "my-rule"
kind = "device-literal"
summary = "why"
files = ["*.py"]

[[rule.example]]
before = 'x.to("cuda")'
after = '''
from latentsync import _lsync_port

x.to(_lsync_port.device())'''
"""


@pytest.fixture
def patches(tmp_path: Path) -> Path:
    target = tmp_path / "patches"
    shutil.copytree(patches_dir(), target)
    return target


def write_rule_file(patches: Path, text: str) -> Path:
    path = patches / "latentsync" / "zz-test.toml"
    path.write_text(textwrap.dedent(text))
    return path


BROKEN = {
    "bad-toml": ("[[rule]\nid = 1", "not valid TOML"),
    "unknown-kind": (GOOD_RULE.replace('"device-literal"', '"no-such-kind"'), "unknown kind 'no-such-kind'"),
    "missing-summary": (GOOD_RULE.replace('summary = "why"\n', ""), "missing field 'summary'"),
    "unknown-field": (GOOD_RULE.replace('summary = "why"', 'summary = "why"\nfile = "typo"'), "unknown field(s): file"),
    "bad-range": (
        GOOD_RULE.replace('files = ["*.py"]', 'files = ["*.py"]\nreleases = "one-six"'),
        "not a version range",
    ),
    "bad-option": (
        GOOD_RULE.replace('files = ["*.py"]', 'files = ["*.py"]\noptions = { positional = ["VideoProcessor"] }'),
        "is not 'callee:index'",
    ),
    "no-examples": (GOOD_RULE.split("[[rule.example]]")[0], "has no [[rule.example]]"),
    "duplicate-id": (GOOD_RULE.replace('"my-rule"', '"device-literal"'), "duplicate rule id"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_rule_file_is_reported_with_file_and_rule(patches, case):
    text, message = BROKEN[case]
    path = write_rule_file(patches, text)
    with pytest.raises(RuleFileError) as error:
        load(patches)
    assert str(path) in str(error.value)
    assert message in str(error.value)
    if case not in ("bad-toml",):
        rule_id = "device-literal" if case == "duplicate-id" else "my-rule"
        assert f"rule '{rule_id}'" in str(error.value)


def test_cli_exits_9_with_a_message_and_no_traceback(patches, fixture_tree, monkeypatch):
    write_rule_file(patches, BROKEN["unknown-kind"][0])
    monkeypatch.setenv("LSYNC_PORT_PATCHES", str(patches))
    result = CliRunner().invoke(app, ["apply", str(fixture_tree)])
    assert result.exit_code == 9
    assert "unknown kind 'no-such-kind'" in result.output
    assert "Traceback" not in result.output
    assert not (fixture_tree / ".lsync-port").exists()


def test_a_valid_extra_rule_file_loads(patches):
    write_rule_file(patches, GOOD_RULE)
    pack = load(patches)
    assert pack.rule("my-rule") is not None


def test_every_rule_names_a_known_kind_and_real_releases():
    pack = load(patches_dir())
    for profile in pack.profiles.values():
        assert profile.releases, f"{profile.name} lists no known release in upstreams.toml"
        for rule in profile.rules:
            assert rule.summary.strip() and rule.files
