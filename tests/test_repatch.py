"""scripts/repatch_upstream.py on a local git repository built from the fixture, and the workflows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

from latentsync_mps.pack.paths import patches_dir

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "repatch_upstream.py"


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path):
    """A git repository whose first commit is the fixture (1.6-shaped) and whose second commit
    moves the fp16 gate (drift) and adds new CUDA code (residue); patches that know commit one."""
    repo = tmp_path / "upstream"
    shutil.copytree(FIXTURES / "latentsync", repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release")
    release = git(repo, "rev-parse", "HEAD")
    script = repo / "scripts" / "inference.py"
    script.write_text(
        script.read_text().replace(
            # is_initialized has no MPS counterpart (is_bf16_supported, used here before, now has one)
            "torch.cuda.is_available() and torch.cuda.get_device_capability()[0] > 7",
            "torch.cuda.is_initialized()",
        )
    )
    git(repo, "commit", "-qam", "upstream moves on")
    patches = tmp_path / "patches"
    shutil.copytree(patches_dir(), patches)
    (patches / "upstreams.toml").write_text(
        f'''[[release]]
name = "fixture"
profile = "latentsync"
version = "1.6"
repository = "{repo}"
commit = "{release}"
fingerprint = {{ present = ["latentsync/utils/face_detector.py"] }}
'''
    )
    for profile in patches.iterdir():  # keep one profile: the others name releases not listed here
        if profile.is_dir() and profile.name != "latentsync":
            shutil.rmtree(profile)
    return repo, patches


def run(tmp_path: Path, patches: Path, *args: str):
    report, table = tmp_path / "report.json", tmp_path / "report.md"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--patches",
            str(patches),
            "--json",
            str(report),
            "--markdown",
            str(table),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, json.loads(report.read_text()), table.read_text()


def test_known_release_is_green_and_the_newest_commit_shows_drift_and_residue(tmp_path, upstream):
    _, patches = upstream
    code, report, table = run(tmp_path, patches, "--skip-verify")
    rows = {row["release"]: row for row in report["rows"]}
    assert set(rows) == {"fixture", "head"}
    fixture = rows["fixture"]["steps"]
    assert {name: step["status"] for name, step in fixture.items()} == {
        "checkout": "pass",
        "apply": "pass",
        "reapply": "pass",
        "scan": "pass",
        "compile": "pass",
        "verify-cpu": "skip",
        "verify-mps-sim": "skip",
    }
    head = rows["head"]["steps"]
    assert head["apply"]["status"] == "fail"
    assert "fp16-gate found 0 in scripts/inference.py" in head["apply"]["detail"]
    assert head["apply"]["counts"]["drift"] == 1 and head["apply"]["counts"]["residue"] == 1
    assert head["scan"]["status"] == "fail" and "scripts/inference.py" in head["scan"]["detail"]
    assert code == 1 and report["passed"] is False
    assert "| latentsync | fixture |" in table and "❌" in table


def test_verify_runs_on_the_checked_out_release(tmp_path, upstream):
    pytest.importorskip("diffusers", reason="verify needs the verify extra")
    _, patches = upstream
    code, report, _ = run(tmp_path, patches, "--release", "fixture")
    steps = report["rows"][0]["steps"]
    assert steps["verify-cpu"]["status"] == "pass", steps["verify-cpu"]["detail"]
    # The known release, ported by its own rules, passes every step, so the script exits 0.
    assert {name: step["status"] for name, step in steps.items()} == {
        "checkout": "pass",
        "apply": "pass",
        "reapply": "pass",
        "scan": "pass",
        "compile": "pass",
        "verify-cpu": "pass",
        "verify-mps-sim": "pass",
    }
    assert code == 0 and report["passed"] is True


def test_tables_come_from_the_run_and_each_release_gets_its_interpreter(tmp_path, upstream):
    """--doc and --readme write the measured tables; --python RELEASE=PATH is used for that release."""
    _, patches = upstream
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- upstream-table:start (written by scripts/repatch_upstream.py --readme) -->\nold\n"
        "<!-- upstream-table:end -->\nrest\n"
    )
    doc = tmp_path / "upstream-report.md"
    missing = tmp_path / "no-such-python"
    code, report, _ = run(
        tmp_path,
        patches,
        "--release",
        "fixture",
        "--python",
        f"fixture={missing}",
        "--doc",
        str(doc),
        "--readme",
        str(readme),
    )
    steps = report["rows"][0]["steps"]
    assert steps["apply"]["status"] == "pass"
    assert steps["verify-cpu"]["status"] == "fail" and str(missing) in steps["verify-cpu"]["detail"]
    assert code == 1
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("<!-- upstream-table:end -->\nrest\n") and "old" not in text
    assert "| release | host stack | commit | apply | verify cpu | verify mps-sim |" in text
    assert "| fixture | tree-pins | `" in text and "| pass (" in text and "| FAIL (" in text
    page = doc.read_text()
    assert page.startswith("# Upstream re-port, ") and "never by hand" in page and "| fixture | tree-pins | `" in page


def test_combine_writes_the_tables_from_runs_made_one_release_at_a_time(tmp_path):
    """--combine runs nothing: the tables come from earlier --json reports, rows in the order given,
    with each verify's CPU time and target torch."""

    def report(release: str, mps_status: str) -> Path:
        step = {"status": "pass", "seconds": 1.0, "detail": "", "counts": {}}
        verify = step | {"seconds": 700.0, "child_cpu_seconds": 240.0, "load_average": 11.5}
        steps = {"apply": step, "verify-cpu": verify, "verify-mps-sim": verify | {"status": mps_status}}
        steps["verify-mps-sim"]["target_torch"] = "2.4.1"
        row = {"release": release, "profile": "latentsync", "repository": "r", "commit": "abc", "steps": steps}
        path = tmp_path / f"{release}.json"
        path.write_text(json.dumps({"rows": [row], "passed": mps_status == "pass"}))
        return path

    first, second = report("1.5", "pass"), report("1.0", "fail")
    doc, table, combined = tmp_path / "doc.md", tmp_path / "all.md", tmp_path / "all.json"
    command = [sys.executable, str(SCRIPT), "--combine", str(first), "--combine", str(second)]
    result = subprocess.run(
        [*command, "--doc", str(doc), "--json", str(combined), "--markdown", str(table)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1  # 1.0's mps-sim failed
    assert [r["release"] for r in json.loads(combined.read_text())["rows"]] == ["1.5", "1.0"]
    page = doc.read_text()
    # reports written before host stacks name none: the column says so
    assert "| 1.5 | – | `abc` | pass (1 s) | pass (700 s, CPU 240 s) | pass (700 s, CPU 240 s, torch 2.4.1) |" in page
    assert "| 1.0 | – | `abc` |" in page and "FAIL (700 s, CPU 240 s, torch 2.4.1)" in page
    assert "load average 11.5 to 11.5" in page
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    refused = subprocess.run([*command[:2], "--combine", str(broken)], capture_output=True, text=True)
    assert refused.returncode != 0 and "not a report written by this script" in refused.stderr


def test_list_gives_the_ci_matrix():
    result = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, check=True)
    names = json.loads(result.stdout)
    assert {"1.0", "1.5", "1.6", "main", "head"} <= set(names)


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 2
    result = subprocess.run([actionlint, *workflows], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
