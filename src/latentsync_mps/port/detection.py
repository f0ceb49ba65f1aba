"""Which upstream (profile) and which of its known releases a tree is."""

from __future__ import annotations

from pathlib import Path

from latentsync_mps.pack.ruleset import Profile, Release, RulePack
from latentsync_mps.port.errors import BadInput, NotUpstream


def detect(tree: Path, pack: RulePack, profile_name: str | None = None) -> tuple[Profile, Release | None]:
    """Which upstream (profile) and which of its known releases this tree is."""
    if profile_name is not None:
        if profile_name not in pack.profiles:
            raise BadInput(f"unknown profile '{profile_name}' (known: {', '.join(sorted(pack.profiles))})")
        profile = pack.profiles[profile_name]
    else:
        candidates = [p for p in pack.profiles.values() if all((tree / d).exists() for d in p.detect)]
        if not candidates:
            wanted = "; ".join(f"{p.name}: {', '.join(p.detect)}" for p in pack.profiles.values())
            raise NotUpstream(
                f"{tree} is not a recognised upstream tree (looked for {wanted}). "
                "Give the root of a LatentSync or ComfyUI-LatentSyncWrapper checkout, or --profile."
            )
        profile = max(candidates, key=lambda p: p.priority)
    return profile, detect_release(tree, profile)


def detect_release(tree: Path, profile: Profile) -> Release | None:
    """The newest known release whose fingerprint fits; None when none does."""

    def text(rel: str) -> str:
        try:
            return (tree / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    for release in sorted(profile.releases, key=lambda r: r.version, reverse=True):
        fp = release.fingerprint
        if (
            all((tree / p).exists() for p in fp.present)
            and not any((tree / p).exists() for p in fp.absent)
            and all(needle in text(file) for file, needle in fp.contains)
            and not any(needle in text(file) for file, needle in fp.lacks)
        ):
            return release
    return None
