"""`verify` and `forecast` say first, in one line, what the interpreter lacks and the command that
installs it, by distribution (issue 24: `pip install .` then verify said "cannot read
configs/unet/stage2.yaml", forecast printed "fail:" rows and "install 'google'" named no package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from rich.console import Console
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.features.forecast import Configuration, ForecastReport
from latentsync_mps.host import needs
from latentsync_mps.payload.verify.distributions import distribution_for, requirement_for
from latentsync_mps.render.forecast import render

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """An interpreter with the standard library only: what a user has after `python -m venv`."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return str(folder / "bin" / "python")


@pytest.mark.parametrize(
    ("module", "python", "distribution"),
    [
        ("google.protobuf", (3, 11), "protobuf"),
        ("cv2", (3, 11), "opencv-python"),
        ("yaml", (3, 11), "pyyaml"),
        ("PIL", (3, 11), "pillow"),
        ("skimage", (3, 11), "scikit-image"),
        ("decord", (3, 11), "eva-decord"),
        ("decord", (3, 12), "decord2"),
        ("omegaconf", (3, 11), "omegaconf"),
    ],
)
def test_an_import_name_maps_to_its_distribution(module, python, distribution):
    assert distribution_for(module, python) == distribution


def test_an_installed_module_is_named_by_what_installed_it():
    # Not in the table: packages_distributions() knows that pytest-xdist (the test extra) installs it.
    assert distribution_for("xdist") == "pytest-xdist"


def test_every_needed_module_is_in_the_verify_extra():
    """needs.py names the extra for these modules: each must come from it (pyproject.toml)."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][needs.EXTRA]
    shipped = {Requirement(r).name.lower() for r in extra}
    for command, modules in needs.NEEDS.items():
        for module in modules:
            assert distribution_for(module, (3, 11)) in shipped, f"{command} needs {module}, not in the extra"


def test_lsync_ports_own_interpreter_without_the_extra_names_the_extra(monkeypatch, fixture_tree):
    monkeypatch.setitem(needs.NEEDS, "verify", ["torch", "google"])  # google: not installed here
    with pytest.raises(needs.Unavailable) as raised:
        needs.check("verify", fixture_tree, None)
    line = str(raised.value)
    assert "\n" not in line and "protobuf" in line and "'google'" not in line and "google," not in line
    assert f"{sys.executable} -m pip install 'lsync-port[verify]'" in line


def test_another_interpreter_is_told_the_trees_pins(bare_python, fixture_tree):
    with pytest.raises(needs.Unavailable) as raised:
        needs.check("forecast", fixture_tree, bare_python)
    line = str(raised.value)
    assert "torch, numpy, omegaconf, diffusers, huggingface-hub" in line
    assert f"{bare_python} -m pip install" in line and "'omegaconf==2.3.0'" in line


@pytest.mark.parametrize(("command", "code"), [("verify", 11), ("forecast", 13)])
def test_the_command_says_it_in_one_line_before_any_run(bare_python, fixture_tree, command, code):
    result = CliRunner().invoke(app, [command, str(fixture_tree), "--python", bare_python])
    assert result.exit_code == code, result.output
    assert result.output.count("\n") == 1 and "lacks torch" in result.output and "pip install" in result.output
    assert "fail:" not in result.output and "cannot read" not in result.output


def test_a_pin_comes_from_the_trees_requirements(fixture_tree):
    assert requirement_for("diffusers", fixture_tree).startswith("diffusers==")
    assert requirement_for("no-such-package", fixture_tree) == "no-such-package"


def test_a_forecast_that_measured_nothing_says_why_first_and_alone():
    rows = [Configuration("cuda", "float16", None, "fail"), Configuration("mps", "float16", True, "fail")]
    report = ForecastReport(
        tree="t", release="1.6", python="p", torch=None, config="configs/unet/stage2.yaml", frames=16,
        resolution=None, steps=2, ported=False, configurations=rows, seconds=0.0,
        reason="cannot read configs/unet/stage2.yaml: ModuleNotFoundError: No module named 'omegaconf'",
    )  # fmt: skip
    console = Console(record=True, width=200)
    render(console, report)
    text = console.export_text()
    assert "NonexNone" not in text and "fail:" not in text and "lsync-port apply" not in text
    assert text.splitlines()[1].startswith("forecast failed: cannot read")


def test_a_too_old_package_is_named_by_its_distribution(tmp_path):
    """`from google.protobuf.internal import builder` fails on an old protobuf: the fix installs
    protobuf (the tree's pin), never 'google'."""
    from latentsync_mps.payload.verify import checks

    (tmp_path / "requirements.txt").write_text("protobuf==4.25.3\n")
    (tmp_path / "mod.py").write_text(
        "def load():\n    raise ImportError('cannot import name builder', name='google.protobuf.internal')\n"
    )
    namespace: dict = {}
    exec(compile((tmp_path / "mod.py").read_text(), str(tmp_path / "mod.py"), "exec"), namespace)
    try:
        namespace["load"]()
    except ImportError as error:
        line = checks.missing_dependency(error, tmp_path.resolve())
    assert "protobuf" in line and "-m pip install 'protobuf==4.25.3'" in line and "install 'google" not in line


def test_doctor_forecast_says_it_first_too(bare_python, fixture_tree):
    result = CliRunner().invoke(app, ["doctor", str(fixture_tree), "--forecast", "--python", bare_python])
    assert result.exit_code == 2 and result.output.startswith("error: forecast runs the tree with")
    assert "pip install" in result.output and result.output.count("\n") == 1
