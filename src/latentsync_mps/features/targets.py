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
