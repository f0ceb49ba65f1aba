"""The tree's release as the child sees it: the facts the spec carries (patches/upstreams.toml,
handed over by verify's runner) and the UNet config the run uses."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__:  # imported as lsync-port's own (the host, its tests)
    from .. import protocol
else:  # loaded by path, through protocol.load_sibling
    protocol = sys.modules["lsync_port_protocol"]

HERE = Path(__file__).resolve().parent
check_run = protocol.load_sibling(HERE / "check_run.py")


def read_config(spec):
    """(config, resolution, whole_chunks) of the tree's UNet config; for a release of whole chunks,
    the spec's frames grow to one chunk at least."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(Path(spec.tree) / spec.config), resolve=True)
    resolution = int(spec.resolution or config["data"]["resolution"])
    # Before InsightFace (1.0, 1.5) the pipeline runs whole chunks of num_frames and drops the rest:
    # the clip must hold one chunk at least, or nothing is generated.
    whole_chunks = release_fact(spec, "whole_chunks")
    if whole_chunks:
        spec.frames = max(spec.frames, int(config["data"]["num_frames"]))
    return config, resolution, whole_chunks


def release_fact(spec, key: str):
    """A fact of the tree's release (patches/upstreams.toml, handed over in the spec by verify's
    runner). For a tree of no known release, what its files tell where they can: the face
    detector and the chunking came with latentsync/utils/face_detector.py (1.6)."""
    facts = spec.release_facts or {}
    if not facts.get("detected") and key in ("whole_chunks", "face_detection"):
        insightface = (Path(spec.tree) / "latentsync/utils/face_detector.py").exists()
        return not insightface if key == "whole_chunks" else ("insightface" if insightface else "face_alignment")
    if key not in facts:
        raise check_run.CheckFailed(
            f"verify's spec lacks the release fact {key!r} (patches/upstreams.toml, [release.facts])"
        )
    return facts[key]


def whisper_model(spec, config) -> str:
    """The whisper model the inference script loads for this UNet config (release facts: whisper,
    whisper_by_width by cross_attention_dim)."""
    width = config["model"].get("cross_attention_dim")
    return release_fact(spec, "whisper_by_width").get(str(width), release_fact(spec, "whisper"))
