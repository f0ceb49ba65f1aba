"""Doctor checks of the LatentSync tree: patched or not, its requirements on this platform, its
checkpoints, the face-detection models, the VAE in the Hugging Face cache, tkinter."""

from __future__ import annotations

from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from latentsync_mps.features.doctor import catalog
from latentsync_mps.features.doctor.facts import ProbeFacts, reads_facts, size, truthy
from latentsync_mps.features.doctor.verdicts import BLOCKER, OK, WARNING, Check, listing


@reads_facts
def check_tree(facts: ProbeFacts) -> Check | None:
    tree = facts.raw.get("tree")
    if not tree:
        return None
    path = tree.get("path")
    if tree.get("error"):
        return Check(
            "tree",
            BLOCKER,
            f"not a LatentSync tree: {tree['error']['message']}",
            "Give the root of a LatentSync checkout (the folder with scripts/inference.py).",
        )
    which = f"profile {tree.get('profile')}, " + (
        f"release {tree['release']} ({tree.get('release_commit')})" if tree.get("release") else "release not recognised"
    )
    status = tree.get("status") or {}
    if status.get("error"):
        return Check("tree", BLOCKER, f"{which}; {status['error']}", f"See `lsync-port status {path}`.")
    if not status.get("patched"):
        if facts.cuda_available and not facts.mps_available:
            return Check(
                "tree",
                WARNING,
                f"{which}; not patched: it runs on CUDA as upstream wrote it, but nowhere else.",
                f"lsync-port apply {path}",
            )
        return Check(
            "tree",
            BLOCKER,
            f'{which}; not patched: upstream code asks for CUDA ("Torch not compiled with CUDA enabled").',
            f"lsync-port apply {path}",
        )
    by = f"patched by lsync-port {status.get('tool_version')} ({status.get('rules')} rules)"
    summary = status.get("summary") or ""
    if "partially" in summary:
        return Check(
            "tree",
            BLOCKER,
            f"{which}; {summary}.",
            f"lsync-port apply {path} (finishes the port) or lsync-port revert {path}",
        )
    if status.get("changed"):
        return Check(
            "tree",
            WARNING,
            f"{which}; {by}, but edited by hand since: {', '.join(status['changed'][:5])}.",
            f"lsync-port status {path}",
        )
    current = facts.raw.get("tool_version")
    if current and status.get("tool_version") != current:
        return Check(
            "tree",
            WARNING,
            f"{which}; {by}; this is lsync-port {current}.",
            f"lsync-port apply {path} (upgrades the port)",
        )
    return Check("tree", OK, f"{which}; {by}.")


def _requirement_lines(text: str):
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


@reads_facts
def check_requirements(facts: ProbeFacts) -> Check | None:
    tree = facts.raw.get("tree") or {}
    if not tree or tree.get("error"):
        return None
    files = tree.get("requirements")
    if not files:
        return Check("requirements", WARNING, "the tree has no requirements.txt.", "")
    env = facts.section("probe", "markers")
    p = facts.section("probe", "platform")
    system, machine = p.get("system", ""), p.get("machine", "")
    py, mac = facts.python_version, facts.macos
    dists = facts.installed
    satisfied, missing, different, no_wheel, notes = [], [], [], [], []
    skipped = 0
    for file in files:
        for line in _requirement_lines(file["text"]):
            if line.startswith("-"):
                if "download.pytorch.org/whl/cu" in line and system == "Darwin":
                    notes.append(f"{file['file']}: {line.split()[0]} names a CUDA wheel index (no macOS builds there)")
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement:
                notes.append(f"{file['file']}: cannot parse {line!r}")
                continue
            if req.marker is not None and env:
                try:
                    if not req.marker.evaluate(dict(env, extra="")):
                        skipped += 1
                        continue
                except Exception:  # noqa: BLE001 - an odd marker is a note, not a crash
                    notes.append(f"cannot evaluate the marker of {line!r}")
            name = canonicalize_name(req.name)
            present = [(d, dists[d]) for d in catalog.EQUIVALENT.get(name, (name,)) if d in dists]
            if not present:
                reason = catalog.no_wheel(name, system, machine, py, mac)
                (no_wheel if reason else missing).append(f"{line} ({reason})" if reason else str(req))
                continue
            dist, version = present[0]
            label = name if dist == name else f"{name} (as {dist})"
            try:
                fits = not req.specifier or req.specifier.contains(Version(version), prereleases=True)
            except InvalidVersion:
                fits = True
            if fits:
                satisfied.append(label)
            else:
                different.append(f"{label} {version} (wants {req.specifier})")
    counted = len(satisfied) + len(missing) + len(different) + len(no_wheel)
    parts = [
        f"{', '.join(f['file'] for f in files)}: {counted} for this platform"
        + (f" ({skipped} skipped by their markers)" if skipped else "")
        + f", {len(satisfied)} satisfied"
    ]
    if no_wheel:
        parts.append("no wheel here: " + listing(no_wheel))
    if missing:
        parts.append("missing: " + listing(missing))
    if different:
        parts.append("other versions: " + listing(different))
    if notes:
        parts.append("; ".join(notes))
    detail = "; ".join(parts) + "."
    install = f"{facts.python_cmd} -m pip install -r {tree.get('path')}/requirements.txt"
    if no_wheel:
        patched = (tree.get("status") or {}).get("patched")
        fix = (
            f"lsync-port apply {tree.get('path')} (rewrites these lines), then {install}"
            if not patched
            else "Edit requirements.txt: these lines cannot install here."
        )
        return Check("requirements", BLOCKER, detail, fix)
    if missing or different or notes:
        return Check(
            "requirements",
            WARNING,
            detail + " Some pins are for training or the web demo only; version differences often still work.",
            install,
        )
    return Check("requirements", OK, detail)


def _checkpoint_line(entry: dict[str, Any]) -> str:
    return f"{entry['path']} {size(entry.get('size'))}"


@reads_facts
def check_checkpoints(facts: ProbeFacts) -> Check | None:
    tree = facts.raw.get("tree") or {}
    if not tree or tree.get("error"):
        return None
    entries = tree.get("checkpoints")
    if entries is None:
        return Check("checkpoints", OK, f"lsync-port has no checkpoint list for profile {tree.get('profile')}.")
    required = [e for e in entries if e.get("required")]
    missing = [e for e in required if not e.get("exists")]
    pointers = [e for e in required if e.get("exists") and (e.get("lfs_pointer") or (e.get("size") or 0) < 1024**2)]
    present = [e for e in required if e.get("exists") and e not in pointers]
    for_release = f"LatentSync {tree.get('release') or '(unrecognised release: the 1.6 list)'}"
    parts = [f"{for_release} needs {', '.join(e['path'] for e in required)}"]
    if present:
        parts.append("present: " + ", ".join(_checkpoint_line(e) for e in present))
    if pointers:
        parts.append(
            "not real weights (Git LFS pointers or truncated): " + ", ".join(_checkpoint_line(e) for e in pointers)
        )
    if missing:
        parts.append("missing: " + ", ".join(e["path"] for e in missing))
    detail = "; ".join(parts) + "."
    if missing or pointers:
        by_repo: dict[str, list[str]] = {}
        others = []
        for e in missing + pointers:
            if e.get("repo"):
                by_repo.setdefault(e["repo"], []).append(e["remote"])
            elif e.get("get"):
                others.append(e["get"])
        fixes = [
            f"huggingface-cli download {repo} {' '.join(files)} --local-dir checkpoints"
            for repo, files in by_repo.items()
        ]
        return Check("checkpoints", BLOCKER, detail, f"cd {tree.get('path')} && " + " && ".join(fixes + others))
    return Check("checkpoints", OK, detail)


@reads_facts
def check_face_models(facts: ProbeFacts) -> Check | None:
    tree = facts.raw.get("tree") or {}
    entries = [e for e in (tree.get("checkpoints") or []) if not e.get("required")]
    if not entries:
        return None
    group = entries[0].get("group")
    present = [e for e in entries if e.get("exists")]
    absent = [e for e in entries if not e.get("exists")]
    where = entries[0].get("location", "").rsplit("/", 1)[0]
    names = ", ".join(e["path"].rsplit("/", 1)[-1] for e in entries)
    if not absent:
        return Check(
            "face-models",
            OK,
            f"{group} models present in {where}: "
            + ", ".join(f"{e['path'].rsplit('/', 1)[-1]} {size(e['size'])}" for e in present)
            + ".",
        )
    if group == "buffalo_l" and absent[0].get("folder_exists"):
        return Check(
            "face-models",
            BLOCKER,
            f"{where} exists but lacks {', '.join(e['path'].rsplit('/', 1)[-1] for e in absent)}; "
            "InsightFace downloads only when the folder is absent, and FaceAnalysis then finds no detector.",
            f"rm -r {where} (it is downloaded again on first run), or put {names} there",
        )
    return Check(
        "face-models",
        WARNING,
        f"{names} not in {where}: {absent[0].get('get')}.",
        "None needed when the first run has network access; offline, put the files there first.",
    )


@reads_facts
def check_vae(facts: ProbeFacts) -> Check | None:
    vae = facts.raw.get("vae") or {}
    if not vae:
        return None
    repo = vae.get("repo") or catalog.vae_repo()
    usable = [s for s in vae.get("snapshots") or [] if s.get("config") and s.get("weights")]
    if usable:
        snap = usable[-1]
        weights = ", ".join(f"{name} {size(n)}" for name, n in snap["weights"].items())
        return Check("vae", OK, f"{repo} in the Hugging Face cache ({snap['path']}: {weights}).")
    offline = truthy(facts.section("probe", "env").get("HF_HUB_OFFLINE"))
    detail = f"{repo} is not in the Hugging Face cache ({vae.get('cache')}); diffusers downloads it on the first run"
    fix = f"huggingface-cli download {repo}"
    if offline:
        return Check(
            "vae", BLOCKER, detail + ", but HF_HUB_OFFLINE is set.", fix + " (with network), or unset HF_HUB_OFFLINE"
        )
    return Check("vae", WARNING, detail + " (needs network).", fix)


@reads_facts
def check_tkinter(facts: ProbeFacts) -> Check | None:
    tree = facts.raw.get("tree") or {}
    if not tree.get("turtle_import"):
        return None
    t = facts.section("probe", "tkinter")
    if t.get("ok"):
        return Check("tkinter", OK, "latentsync/models/attention.py imports turtle; tkinter imports here.")
    return Check(
        "tkinter",
        BLOCKER,
        "latentsync/models/attention.py does `from turtle import forward` (unused), which needs tkinter; "
        f"this Python has none ({t.get('error')}).",
        "Delete that line, or use a Python built with Tk (Homebrew: brew install python-tk@3.X).",
    )
