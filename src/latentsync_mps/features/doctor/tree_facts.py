"""Facts about a LatentSync tree for `lsync-port doctor`: what it is, whether it is patched, what
it asks to install, which config it runs, and which checkpoint files are there.

Reads files only: nothing in the tree is imported or executed. The facts are plain data, so the
checks (checks.py) can be tested with hand-made ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentsync_mps.features.doctor import catalog
from latentsync_mps.pack import release_facts
from latentsync_mps.port.errors import PortError

# What the CLI would exit with for an error, in the facts (the JSON report) as a number: the CLI
# passes its own map in, since exit codes are its business alone.
ExitCodeOf = Callable[[PortError], int]

_CONFIG_IN_SHELL = re.compile(r"--unet_config_path\s+[\"']?([^\s\"']+)")
_CONFIG_DEFAULT = re.compile(r"[\"']--unet_config_path[\"'][^)]*?default\s*=\s*[\"']([^\"']+)")
_RESOLUTION = re.compile(r"^\s+resolution:\s*(\d+)\s*$", re.MULTILINE)
_CROSS_ATTENTION = re.compile(r"^\s+cross_attention_dim:\s*(\d+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement)[\s=]+(\S+)")
CPU_REFUSAL = "Using the CPU for face detection is not supported"


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def gather_tree(
    tree: Path, pack, caches: dict[str, Any] | None = None, exit_code_of: ExitCodeOf | None = None
) -> dict[str, Any]:
    """Facts about `tree` (an existing folder). Errors of detection are facts too.

    `caches` (the probe's answer: where torch.hub keeps downloads) locates the checkpoints that
    live outside the tree; add_checkpoints() fills them in again once the probe has answered."""
    from latentsync_mps.port.detection import detect

    facts: dict[str, Any] = {"path": str(tree), "error": None, "profile": None, "release": None}
    try:
        profile, release = detect(tree, pack)
    except PortError as error:
        facts["error"] = {"message": str(error), "exit_code": _exit_code(error, exit_code_of)}
        return facts
    facts["profile"] = profile.name
    facts["release"] = release.name if release else None
    facts["release_commit"] = release.commit if release else None
    facts["runtime_helper"] = profile.runtime_path if (tree / profile.runtime_path).is_file() else None
    facts["status"] = _status(tree, exit_code_of)
    facts["requirements"] = _requirements(tree)
    facts["target_torch"] = _target_torch(tree)
    facts["config"] = _config(tree)
    add_checkpoints(facts, caches)
    attention = _text(tree / "latentsync/models/attention.py") or ""
    facts["turtle_import"] = "from turtle import" in attention
    processor = _text(tree / "latentsync/utils/image_processor.py") or ""
    facts["cpu_face_detection_refused"] = CPU_REFUSAL in processor
    return facts


def _status(tree: Path, exit_code_of: ExitCodeOf | None) -> dict[str, Any]:
    from latentsync_mps.port import transaction

    try:
        result = transaction.status(tree)
    except PortError as error:
        return {"error": str(error), "exit_code": _exit_code(error, exit_code_of)}
    manifest = result.manifest
    if manifest is None:
        return {"patched": False}
    states: dict[str, int] = {}
    for f in result.files:
        states[f.state] = states.get(f.state, 0) + 1
    return {
        "patched": True,
        "summary": result.summary,
        "tool_version": manifest.tool_version,
        "profile": manifest.profile,
        "release": manifest.release,
        "rules": len(manifest.rules),
        "states": states,
        "changed": [f.path for f in result.files if f.state in ("modified", "missing")],
    }


def _exit_code(error: PortError, exit_code_of: ExitCodeOf | None) -> int | None:
    return int(exit_code_of(error)) if exit_code_of else None


def _target_torch(tree: Path) -> dict[str, Any]:
    """The torch the tree's requirements install on a Mac (what verify --device mps-sim judges against)."""
    from latentsync_mps.pack.target_torch import TargetTorchError, resolve

    try:
        return resolve(tree).to_json()
    except TargetTorchError as error:
        return {"error": str(error)}


def _requirements(tree: Path) -> list[dict[str, str]] | None:
    """requirements.txt and the files it includes with -r, as text."""
    found: list[dict[str, str]] = []
    pending = ["requirements.txt"]
    while pending and len(found) < 10:
        rel = pending.pop(0)
        if any(f["file"] == rel for f in found):
            continue
        text = _text(tree / rel)
        if text is None:
            continue
        found.append({"file": rel, "text": text})
        for line in text.splitlines():
            match = _INCLUDE.match(line)
            if match:
                pending.append((Path(rel).parent / match.group(1)).as_posix())
    return found or None


def _config(tree: Path) -> dict[str, Any] | None:
    """The UNet config inference uses: the one inference.sh names, else scripts/inference.py's default."""
    chosen = None
    for source, pattern in (("inference.sh", _CONFIG_IN_SHELL), ("scripts/inference.py", _CONFIG_DEFAULT)):
        match = pattern.search(_text(tree / source) or "")
        if match:
            chosen = (match.group(1), source)
            break
    if chosen is None:
        return None
    path, source = chosen
    text = _text(tree / path)
    facts: dict[str, Any] = {"path": path, "source": source, "exists": text is not None}
    if text is not None:
        resolution = _RESOLUTION.search(text)
        cross = _CROSS_ATTENTION.search(text)
        facts["resolution"] = int(resolution.group(1)) if resolution else None
        facts["cross_attention_dim"] = int(cross.group(1)) if cross else None
    return facts


def file_facts(path: Path) -> dict[str, Any]:
    """Presence and size of a file (following symlinks), and whether it is a Git LFS pointer."""
    facts: dict[str, Any] = {"exists": False, "size": None, "lfs_pointer": False, "folder_exists": path.parent.is_dir()}
    try:
        if path.is_file():
            facts["exists"] = True
            facts["size"] = path.stat().st_size
            if facts["size"] < 1024:
                with path.open("rb") as handle:
                    facts["lfs_pointer"] = handle.read(64).startswith(b"version https://git-lfs")
    except OSError:
        pass
    return facts


def add_checkpoints(facts: dict[str, Any], caches: dict[str, Any] | None) -> None:
    """Set facts["checkpoints"]: each file the detected release needs, with presence and size."""
    if facts.get("error") or not facts.get("profile"):
        return
    known = release_facts.lookup(facts["profile"], facts["release"]) or release_facts.newest(facts["profile"])
    width = (facts.get("config") or {}).get("cross_attention_dim")
    whisper = known.whisper_for(width) if known else "tiny"
    facts["checkpoints"] = _checkpoints(Path(facts["path"]), facts["profile"], facts["release"], whisper, caches)


def _checkpoints(
    tree: Path, profile: str, release: str | None, whisper: str, caches: dict[str, Any] | None
) -> list[dict[str, Any]] | None:
    entries = catalog.checkpoints(profile, release, whisper)
    if entries is None:
        return None
    torch_hub = (caches or {}).get("torch_hub") if isinstance(caches, dict) else None
    out = []
    for entry in entries:
        if entry.base == "torch_hub":
            if not torch_hub:
                continue
            where = Path(torch_hub) / entry.path
        else:
            where = tree / entry.path
        out.append(
            {
                "path": entry.path,
                "base": entry.base,
                "location": str(where),
                "purpose": entry.purpose,
                "required": entry.required,
                "group": entry.group,
                "get": entry.get,
                "repo": entry.repo,
                "remote": entry.remote,
                **file_facts(where),
            }
        )
    return out


def gather_vae(caches: dict[str, Any] | None, profile: str | None = None, release: str | None = None) -> dict[str, Any]:
    """The VAE in the Hugging Face cache: snapshots of the release's VAE repository
    (stabilityai/sd-vae-ft-mse for every release so far) and their weights."""
    hub = caches.get("hf_hub") if isinstance(caches, dict) else None
    repo = catalog.vae_repo(profile, release)
    facts: dict[str, Any] = {"repo": repo, "cache": hub, "snapshots": []}
    if not hub or not repo:
        return facts
    folder = Path(hub) / ("models--" + repo.replace("/", "--")) / "snapshots"
    try:
        snapshots = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return facts
    for snapshot in snapshots:
        weights = {}
        for name in catalog.VAE_WEIGHTS:
            info = file_facts(snapshot / name)
            if info["exists"]:
                weights[name] = info["size"]
        facts["snapshots"].append(
            {"path": str(snapshot), "config": (snapshot / "config.json").is_file(), "weights": weights}
        )
    return facts
