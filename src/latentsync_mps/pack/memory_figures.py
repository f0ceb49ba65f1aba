"""The memory figures `apply` writes beside the runtime helper, for its dtype policy on mps.

The helper runs inside the user's tree, where lsync-port is not installed, and chooses float32 on
mps only where the release's forecast peak in float32 fits the Mac's recommended working set.
So apply copies the tree's release's mps rows of the shipped forecast
(patches/forecast-measured.json) into `_lsync_port_memory.json` next to the helper; the manifest
records it like the helper, and revert removes it. A release without shipped figures (1.0) gets
no file: the helper then falls back to upstream's published minimum.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from latentsync_mps.pack.errors import TableError
from latentsync_mps.pack.forecast_tables import measured_forecasts

# The helper reads this name from its own folder (runtime/_lsync_port.py, MEMORY_FIGURES).
DATA_NAME = "_lsync_port_memory.json"


def data_path(runtime_path: str) -> str:
    """Where the figures go in the tree: beside the helper."""
    return str(PurePosixPath(runtime_path).with_name(DATA_NAME))


def figures_for(release) -> bytes | None:
    """The file's bytes for a release (by name, else by the version a wrapper vendors), or None
    when the release has no shipped forecast."""
    if release is None:
        return None
    try:
        releases = measured_forecasts() or {}
    except TableError:
        return None
    shipped = releases.get(release.name) or releases.get(str(release.version))
    if not shipped:
        return None
    rows = [
        {"dtype": row["dtype"], "chunking": row.get("chunking"), "peak_bytes": row["peak_bytes"]}
        for row in shipped.get("configurations", [])
        if row.get("device") == "mps" and row.get("peak_bytes")
    ]
    if not rows:
        return None
    payload = {
        "about": "lsync-port's shipped forecast for this release, read by _lsync_port.py's dtype policy on mps; "
        "peak_bytes: one chunk of inference with the weights",
        "release": shipped.get("release") or release.name,
        "resolution": shipped.get("resolution"),
        "frames": shipped.get("frames"),
        "torch": shipped.get("torch"),
        "mps": sorted(rows, key=lambda r: (r["dtype"], str(r["chunking"]))),
    }
    return (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode("utf-8")
