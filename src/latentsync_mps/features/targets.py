"""What lsync-port knows about the machines and code it ports for, each fact with its source and date
(`lsync-port targets`).

- torch releases: the MPS tables `verify --device mps-sim` judges by (verify/mps_tables.json), each
  derived from the release's macOS arm64 wheel: the wheel, its build date, and the oldest macOS it
  installs on (from its platform tag);
- host stacks: the Python environments the ComfyUI wrapper really runs in (patches/stacks.toml);
- upstream releases and wrapper commits: patches/upstreams.toml;
- what the package registry and the upstream repositories served when last checked, and the releases
  skipped for having no macOS arm64 wheel: patches/watched.toml, which scripts/check_targets.py
  writes (the scheduled check in .github/workflows/upstream.yml fails when it is out of date).

Only small files are read (TOML through pack/toml_files.py, json): no torch, no libcst.
"""

from __future__ import annotations

from pathlib import Path

from latentsync_mps.pack.toml_files import read_toml

STACKS = "stacks.toml"
UPSTREAMS = "upstreams.toml"
WATCHED = "watched.toml"
REFRESH = "python scripts/check_targets.py --refresh"


def _toml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return read_toml(path)


def gather(patches: Path) -> dict:
    """Every target lsync-port knows, as plain data (the --json output)."""
    from latentsync_mps.pack import target_torch

    watched = _toml(patches / WATCHED) or {}
    torch_watch = watched.get("packages", {}).get("torch", {})
    stacks = _toml(patches / STACKS)
    upstreams = _toml(patches / UPSTREAMS) or {}
    return {
        "torch": {
            "source": f"src/latentsync_mps/pack/{target_torch.TABLES.name}",
            "releases": target_torch.releases(),
            "skipped": torch_watch.get("no_macos_wheel", []),
            "checked": watched.get("checked"),
        },
        "host_stacks": {
            "source": f"patches/{STACKS}",
            "stacks": [_stack(s) for s in stacks.get("stack", [])] if stacks is not None else [],
            "note": None if stacks is not None else f"no host stacks known: patches/{STACKS} is missing",
        },
        "upstreams": [
            {k: release.get(k) for k in ("name", "profile", "version", "repository", "commit", "date")}
            for release in upstreams.get("release", [])
        ],
        "watched": {
            "source": f"patches/{WATCHED}",
            "checked": watched.get("checked"),
            "index": watched.get("index"),
            "packages": {
                name: {"newest": _newest(entry.get("macos_arm64", {})), "skipped": entry.get("no_macos_wheel", [])}
                for name, entry in watched.get("packages", {}).items()
            },
            "desktop": watched.get("desktop"),
            "heads": watched.get("upstream", []),
            "refresh": REFRESH,
        },
    }


def _stack(entry: dict) -> dict:
    keys = ("name", "summary", "python", "macos", "source", "checked", "profiles", "default_for", "ffmpeg_on_path")
    out = {k: entry.get(k) for k in keys}
    out["packages"] = dict(entry.get("packages", {}))
    return out


def _newest(versions: dict) -> str | None:
    from packaging.version import Version

    return max(versions, key=Version) if versions else None


def render(console, data: dict) -> None:
    """The targets as tables a person reads: what, which version, needs what, from where, when."""
    from rich.table import Table

    torch = data["torch"]
    table = Table(title=f"torch releases with an MPS table ({torch['source']})", title_justify="left")
    sources = [release["wheel"] or release["source"] for release in torch["releases"]]
    for column in ("torch", "min macOS", "built"):
        table.add_column(column, overflow="fold")
    # A wheel's name is what a person pastes into pip: never folded, the other columns give way.
    table.add_column("derived from (macOS arm64 wheel)", min_width=max(map(len, sources), default=0), no_wrap=True)
    for release, source in zip(torch["releases"], sources, strict=True):
        table.add_row(release["torch"], release["min_macos"] or "?", release["built"] or "?", source)
    console.print(table)
    if torch["checked"]:
        skipped = ", ".join(torch["skipped"]) or "none"
        console.print(
            f"Skipped (on the registry with no macOS arm64 wheel, {torch['checked']}): {skipped}", highlight=False
        )

    stacks = data["host_stacks"]
    if stacks["note"]:
        console.print(f"\nHost stacks: {stacks['note']}.", highlight=False)
    else:
        table = Table(title=f"\nhost stacks ({stacks['source']})", title_justify="left")
        for column in ("stack", "python", "macOS", "torch", "source", "checked"):
            table.add_column(column)
        for stack in stacks["stacks"]:
            table.add_row(
                f"{stack['name']}: {stack['summary']}" if stack["summary"] else stack["name"],
                stack["python"] or "?",
                stack["macos"] or "?",
                stack["packages"].get("torch", "-"),
                stack["source"] or "?",
                stack["checked"] or "?",
            )
        console.print(table)

    table = Table(title=f"\nupstream releases and wrapper commits (patches/{UPSTREAMS})", title_justify="left")
    for column in ("release", "profile", "commit", "date", "repository (GitHub)"):
        table.add_column(column, overflow="fold")
    for release in data["upstreams"]:
        where = release["repository"].removeprefix("https://github.com/")
        table.add_row(release["name"], release["profile"], release["commit"], release["date"] or "?", where)
    console.print(table)

    watched = data["watched"]
    if watched["checked"] is None:
        console.print(f"\nNot checked against the registry yet ({watched['source']} is missing): run `{REFRESH}`.")
        return
    newest = ", ".join(
        f"{name} {entry['newest']}" for name, entry in watched["packages"].items() if entry["newest"] is not None
    )
    console.print(
        f"\nLast checked {watched['checked']} ({watched['source']}): newest with a macOS arm64 wheel on "
        f"{watched['index']}: {newest}.",
        highlight=False,
    )
    desktop = watched["desktop"]
    if desktop:
        console.print(
            f"ComfyUI Desktop's {desktop['path']}: sha256 {desktop['sha256'][:12]}, as of commit "
            f"{desktop['commit'][:8]} of {desktop['repository']}.",
            highlight=False,
        )
    for head in watched["heads"]:
        console.print(f"{head['repository']}: HEAD {head['head'][:7]} ({head['date']}).", highlight=False)
    console.print(f"Refresh all of it: `{REFRESH}` (from a checkout).", highlight=False)
