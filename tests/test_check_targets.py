"""scripts/check_targets.py: the scheduled check that notices new torch/torchvision/torchaudio releases
with macOS arm64 wheels, a changed ComfyUI Desktop requirements file and new upstream commits. Every
source is local here: a folder of PEP 691 pages for the index, git repositories made in tmp_path for
GitHub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_targets.py"
spec = importlib.util.spec_from_file_location("check_targets", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

DESKTOP = "https://github.com/Comfy-Org/desktop"
TODAY = "2026-12-07"


def _wheel(name: str) -> dict:
    return {"filename": name, "url": f"https://example.invalid/{name}", "hashes": {}}


def _shipped_torch() -> list[str]:
    return [r["torch"] for r in json.loads(check.TABLES.read_text(encoding="utf-8"))["releases"]]


def write_index(folder: Path, extra_torch: list[str] = ()) -> Path:
    """torch: every release with a shipped table (macOS wheels as the registry tags them), one below the
    floor, one with Linux wheels only, and `extra_torch`; torchvision and torchaudio: a few."""
    folder.mkdir(exist_ok=True)
    torch = [_wheel("torch-2.0.1-cp311-none-macosx_11_0_arm64.whl")]  # below the floor: not tracked
    for version in _shipped_torch():
        tag = "macosx_14_0_arm64" if Version(version) >= Version("2.12") else "macosx_11_0_arm64"
        torch += [
            _wheel(f"torch-{version}-cp311-cp311-{tag}.whl"),
            _wheel(f"torch-{version}-cp311-cp311-win_amd64.whl"),
        ]
    torch.append(_wheel("torch-2.15.1-cp311-cp311-manylinux_2_28_x86_64.whl"))  # no macOS wheel: skipped
    torch += [_wheel(f"torch-{v}-cp312-cp312-macosx_15_0_arm64.whl") for v in extra_torch]
    pages = {
        "torch": torch,
        "torchvision": [
            _wheel("torchvision-0.25.0-cp311-cp311-macosx_11_0_arm64.whl"),
            _wheel("torchvision-0.29.2-py3-none-macosx_14_0_arm64.whl"),
            _wheel("torchvision-0.30.0-cp39-cp39-macosx_14_0_arm64.whl"),  # CPython 3.9 only: not for us
        ],
        "torchaudio": [
            _wheel("torchaudio-2.10.0-cp311-cp311-macosx_11_0_arm64.whl"),
            {**_wheel("torchaudio-2.11.0-cp311-cp311-macosx_11_0_arm64.whl"), "yanked": True},
        ],
    }
    for name, files in pages.items():
        (folder / f"{name}.json").write_text(json.dumps({"name": name, "files": files}), encoding="utf-8")
    return folder


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commit(path, files, "first")
    return path


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "-C", str(repo), *env, "commit", "-q", "-m", message], check=True)


COMPILED = "# uv pip compile ...\ntorch==2.10.0\n    # via -r requirements.txt\ntorchvision==0.25.0\nav==16.1.0\n"


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A local index and local repositories for every GitHub URL the check reads. The real
    scripts/derive_stacks.py asks PyPI and rewrites patches/stacks.toml: never run it here (the test
    of that step gives it a stand-in)."""
    monkeypatch.setattr(check, "STACKS_SCRIPT", tmp_path / "no-derive_stacks.py")
    repos = {DESKTOP: make_repo(tmp_path / "desktop", {"assets/requirements/macos.compiled": COMPILED})}
    for url in check.upstream_repositories():
        repos[url] = make_repo(tmp_path / url.rsplit("/", 1)[-1], {"README.md": "upstream\n"})
    index = write_index(tmp_path / "index")
    args = ["--index", str(index), "--watched", str(tmp_path / "watched.toml"), "--today", TODAY]
    for url, path in repos.items():
        args += ["--repo", f"{url}={path}"]
    return {"repos": repos, "index": index, "args": args, "watched": tmp_path / "watched.toml"}


def run(args, capsys):
    code = check.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def tables_digest() -> str:
    return hashlib.sha256(check.TABLES.read_bytes()).hexdigest()


def test_wheel_tags_say_which_are_macos_arm64_for_cpython_3_10_to_3_13():
    assert check.macos_arm64("torch-2.14.1-cp311-cp311-macosx_14_0_arm64.whl") == "14.0"
    assert check.macos_arm64("torch-2.5.1-cp311-none-macosx_11_0_arm64.whl") == "11.0"
    assert check.macos_arm64("torchaudio-2.11.1-py3-none-macosx_14_0_arm64.whl") == "14.0"
    assert check.macos_arm64("torchaudio-2.11.0-cp313-cp313t-macosx_12_0_arm64.whl") == "12.0"
    assert check.macos_arm64("torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl") is None
    assert check.macos_arm64("torch-2.14.1-cp39-cp39-macosx_14_0_arm64.whl") is None
    assert check.macos_arm64("torch-2.14.1-cp314-cp314-macosx_14_0_arm64.whl") is None
    assert check.macos_arm64("torch-2.14.1-cp311-cp311-macosx_14_0_x86_64.whl") is None


def test_refresh_records_what_the_sources_serve_then_a_check_is_green(sources, capsys):
    before = tables_digest()
    code, out, _ = run([*sources["args"], "--refresh"], capsys)
    assert code == 0, out
    assert tables_digest() == before  # every torch release has its table: nothing to derive
    record = check.tomllib.loads(sources["watched"].read_text(encoding="utf-8"))
    torch = record["packages"]["torch"]
    assert torch["macos_arm64"]["2.12.0"] == "14.0" and torch["macos_arm64"]["2.5.1"] == "11.0"
    assert "2.0.1" not in torch["macos_arm64"]  # below the floor
    assert torch["no_macos_wheel"] == ["2.15.1"]  # skipped, and listed as such
    assert record["packages"]["torchvision"]["macos_arm64"] == {"0.25.0": "11.0", "0.29.2": "14.0"}
    assert record["packages"]["torchvision"]["no_macos_wheel"] == ["0.30.0"]
    assert record["packages"]["torchaudio"]["macos_arm64"] == {"2.10.0": "11.0"}  # 2.11.0 is yanked
    assert record["desktop"]["pins"]["torch"] == "2.10.0"
    assert record["desktop"]["sha256"] == hashlib.sha256(COMPILED.encode()).hexdigest()
    assert record["checked"] == TODAY
    written = sources["watched"].read_bytes()

    code, out, _ = run([*sources["args"], "--today", "2026-12-08"], capsys)
    assert code == 0 and out.startswith("up to date:"), out
    code, out, _ = run([*sources["args"], "--today", "2026-12-08", "--refresh"], capsys)
    assert code == 0 and sources["watched"].read_bytes() == written  # nothing new: not even the date changes


def test_a_changed_desktop_file_fails_with_its_pins_diff_and_the_refresh_command(sources, capsys):
    run([*sources["args"], "--refresh"], capsys)
    written = sources["watched"].read_bytes()
    commit(
        sources["repos"][DESKTOP], {"assets/requirements/macos.compiled": COMPILED.replace("2.10.0", "2.11.0")}, "bump"
    )
    code, out, _ = run([*sources["args"], "--dry-run"], capsys)
    assert code == 1
    assert "ComfyUI Desktop's assets/requirements/macos.compiled changed" in out and "torch 2.10.0 -> 2.11.0" in out
    assert '-"torch" = "2.10.0"' in out and '+"torch" = "2.11.0"' in out  # the diff of the record
    assert out.rstrip().endswith("refresh with: python scripts/check_targets.py --refresh (dry run: nothing written)")
    assert sources["watched"].read_bytes() == written


def test_a_new_upstream_commit_fails_the_check(sources, capsys):
    run([*sources["args"], "--refresh"], capsys)
    url = check.upstream_repositories()[0]
    commit(sources["repos"][url], {"new.py": "x = 1\n"}, "new")
    code, out, _ = run(sources["args"], capsys)
    new_head = git(sources["repos"][url], "rev-parse", "HEAD").strip()
    assert code == 1 and f"{url}: new HEAD {new_head[:7]}" in out


def test_a_new_torch_with_a_macos_wheel_and_no_table_fails_the_check(sources, capsys):
    run([*sources["args"], "--refresh"], capsys)
    write_index(sources["index"], extra_torch=["2.99.0"])
    code, out, _ = run([*sources["args"], "--dry-run"], capsys)
    assert code == 1
    assert "torch 2.99.0: a macOS arm64 wheel and no MPS table" in out
    assert "torch 2.99.0: new on the index with a macOS arm64 wheel (macOS 15.0+)" in out


def test_an_unreachable_index_is_one_line_and_changes_nothing(sources, capsys):
    run([*sources["args"], "--refresh"], capsys)
    written, tables = sources["watched"].read_bytes(), tables_digest()
    args = [*sources["args"], "--refresh", "--index", "http://127.0.0.1:9/simple"]
    code, out, err = run(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "the package index http://127.0.0.1:9/simple cannot be reached" in err
    assert err.rstrip().endswith("nothing was changed")
    assert sources["watched"].read_bytes() == written and tables_digest() == tables


def test_an_unreachable_repository_is_one_line_and_changes_nothing(sources, capsys, tmp_path):
    run([*sources["args"], "--refresh"], capsys)
    written = sources["watched"].read_bytes()
    code, _, err = run([*sources["args"], "--refresh", "--repo", f"{DESKTOP}={tmp_path / 'gone'}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "nothing was changed" in err
    assert sources["watched"].read_bytes() == written


def test_the_shipped_record_names_every_shipped_torch_table():
    """patches/watched.toml (today's refresh) and the tables agree: every torch release the registry
    served with a macOS arm64 wheel has its table, and the record says what was skipped."""
    record = check.tomllib.loads(check.WATCHED.read_text(encoding="utf-8"))
    served = list(record["packages"]["torch"]["macos_arm64"])
    assert served == _shipped_torch()
    assert {"2.12.0", "2.13.0", "2.14.1"} <= set(served)
    assert isinstance(record["packages"]["torch"]["no_macos_wheel"], list)


def test_refresh_regenerates_the_host_stacks_when_something_is_new(sources, capsys, tmp_path, monkeypatch):
    """scripts/derive_stacks.py (patches/stacks.toml) runs on news, with Desktop's file at the HEAD read."""
    run([*sources["args"], "--refresh"], capsys)
    called = tmp_path / "called.json"
    fake = tmp_path / "derive_stacks.py"
    fake.write_text(f"import json, sys\nopen({str(called)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    monkeypatch.setattr(check, "STACKS_SCRIPT", fake)
    code, _, _ = run([*sources["args"], "--refresh"], capsys)
    assert code == 0 and not called.exists()  # nothing new: the stacks are left alone
    desktop = sources["repos"][DESKTOP]
    commit(desktop, {"assets/requirements/macos.compiled": COMPILED.replace("2.10.0", "2.11.0")}, "bump")
    code, out, _ = run([*sources["args"], "--refresh"], capsys)
    assert code == 0 and "refreshed:" in out
    head = git(desktop, "rev-parse", "HEAD").strip()
    assert json.loads(called.read_text()) == ["--desktop", f"{desktop}@{head}"]
