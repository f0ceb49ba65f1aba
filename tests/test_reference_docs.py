"""docs/reference/ is what scripts/gen_reference.py writes from the data; the README stays short
and its links lead somewhere."""

from __future__ import annotations

import filecmp
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(generator, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    generator.write(folder)
    return folder


def test_the_committed_reference_is_what_the_data_gives(fresh, generator):
    fresh_names = {p.name for p in fresh.glob("*.md")}
    committed = {p.name for p in REFERENCE.glob("*.md")}
    stale = sorted(
        f"docs/reference/{name}"
        for name in fresh_names | committed
        if name not in fresh_names
        or name not in committed
        or not filecmp.cmp(fresh / name, REFERENCE / name, shallow=False)
    )
    assert not stale, f"stale generated docs: {', '.join(stale)}; refresh them with `{generator.REFRESH}`"


def test_generation_is_deterministic(fresh, generator, tmp_path):
    generator.write(tmp_path)
    for page in fresh.glob("*.md"):
        assert (tmp_path / page.name).read_bytes() == page.read_bytes(), page.name
        assert str(REPO) not in page.read_text(), f"{page.name} names an absolute path"


def test_every_source_is_in_the_reference(fresh, generator):
    """Each rule, kind, helper function, exit code and variable has its place (a wrong or missing
    source would give a page without them)."""
    pack = generator.rule_pack()
    for name, profile in pack.profiles.items():
        text = (fresh / f"rules-{name}.md").read_text()
        own = generator._own_rules(profile)
        assert own, name
        for rule in own:
            assert f"### `{rule.id}`" in text and rule.summary.split()[0] in text
    kinds_page = (fresh / "rule-kinds.md").read_text()
    assert all(f"`{kind}`" in kinds_page for kind in generator.rule_kinds())
    findings_page = (fresh / "finding-kinds.md").read_text()
    assert all(f"| `{kind}` |" in findings_page for kind in generator.finding_kinds())
    helper = (fresh / "helper-api.md").read_text()
    for function in ("device", "dtype", "interpolate", "release_chunk_memory"):
        assert f"## `{function}`" in helper
    exits = (fresh / "exit-codes.md").read_text()
    for member in generator.exit_enum():
        assert f"| {member.value} | `{member.name}` |" in exits
    environment = (fresh / "environment.md").read_text()
    variables, _ = generator.environment_variables()
    assert all(f"| `{v.name}` |" in environment for v in variables)


def test_an_exit_code_without_a_description_is_refused(generator):
    from enum import IntEnum

    class Exit(IntEnum):
        OK = 0
        """ok"""
        NEW = 14

    with pytest.raises(SystemExit, match="NEW has no docstring"):
        generator.exit_codes_page(Exit)


def test_check_names_the_stale_page_and_the_command(generator, tmp_path, capsys):
    generator.write(tmp_path)
    (tmp_path / "exit-codes.md").write_text("edited by hand\n")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "exit-codes.md is stale" in out and generator.REFRESH in out
    generator.write(tmp_path)
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0


def test_readme_is_short_and_its_links_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "lsync-port demo" in text and "bash scripts/test.sh" in text
    # The block scripts/repatch_upstream.py --readme rewrites.
    assert "<!-- upstream-table:start" in text and "<!-- upstream-table:end -->" in text


PAGES = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_lead_to_files_that_exist(page):
    path = REPO / page
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"


def test_help_lists_every_exit_code(generator):
    """`lsync-port --help` keeps its own short list of the codes: none may be missing from it."""
    from latentsync_mps.cli.exits import EXIT_CODES_HELP

    for member in generator.exit_enum():
        assert re.search(rf"(?<![\w-]){member.value} ", EXIT_CODES_HELP), (
            f"exit code {member.value} missing from --help"
        )
