"""The shipped tables forecast and doctor read, each under the rule packs' folder (patches_dir(),
unless `root` says which):

    forecast.toml            what a tree does not hold: the VAE's config, whisper's dimensions
    forecast-measured.json   the forecast measured on each real release (scripts/ship_forecast.py)
    apple-chips.toml         each Apple chip's peak FLOPs and memory bandwidth, with sources
    cpu-measured.json        the CPU parts of a chunk measured by scripts/bench.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentsync_mps.pack.errors import TableError, TomlSyntaxError
from latentsync_mps.pack.paths import patches_dir
from latentsync_mps.pack.toml_files import read_toml

FACTS_FILE = "forecast.toml"
MEASURED_FILE = "forecast-measured.json"
CHIPS_FILE = "apple-chips.toml"
CPU_FILE = "cpu-measured.json"


def forecast_facts(root: Path | None = None) -> dict[str, Any]:
    """forecast.toml; TableError when it cannot be read."""
    path = (root or patches_dir()) / FACTS_FILE
    try:
        return read_toml(path)
    except (OSError, TomlSyntaxError) as error:
        raise TableError(path, error) from None


def measured_forecasts(root: Path | None = None) -> dict[str, Any] | None:
    """release name -> its shipped forecast: {"release", "resolution", "frames", "torch", "commit",
    "configurations": [{"device", "dtype", "chunking", "peak_bytes", "largest_buffer_bytes"}]}.
    None when no forecast is shipped; TableError when the file cannot be read."""
    path = (root or patches_dir()) / MEASURED_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("releases", {})
    except (OSError, ValueError) as error:
        raise TableError(path, error) from None


def chip_table(root: Path | None = None) -> dict[str, Any]:
    """apple-chips.toml; TableError when it cannot be read."""
    path = (root or patches_dir()) / CHIPS_FILE
    try:
        return read_toml(path)
    except (OSError, TomlSyntaxError) as error:
        raise TableError(path, error) from None


def load_cpu_parts(root: Path | None = None) -> dict[str, Any] | None:
    """scripts/bench.py's measured CPU parts: {"date", "machine", "parts": {name: {"per_frame_s", ...}}};
    None when there are none, or the file cannot be read."""
    path = (root or patches_dir()) / CPU_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# The forecast measured on each real release (scripts/ship_forecast.py writes forecast-measured.json
# from `lsync-port forecast --json` reports): doctor reads it because a live forecast takes a
# minute or more.
def measured(release: str | None, root: Path | None = None) -> dict | None:
    """The shipped forecast of a release: {"release", "resolution", "frames", "torch", "commit",
    "configurations": [{"device", "dtype", "chunking", "peak_bytes", "largest_buffer_bytes"}]},
    or None when the release was not measured; TableError when the file cannot be read."""
    if release is None:
        return None
    releases = measured_forecasts(root)
    return None if releases is None else releases.get(release)


def pick(forecast: dict, device: str, dtype: str, chunking: bool) -> dict | None:
    """The configuration row of a forecast (shipped or live JSON) for one way of running.
    bfloat16 has float16's sizes; the CUDA path has no chunking."""
    dtype = "float16" if dtype == "bfloat16" else dtype
    for row in forecast.get("configurations", []):
        if row["device"] != device or row["dtype"] != dtype or row.get("peak_bytes") is None:
            continue
        if device == "cuda" or row.get("chunking") == chunking:
            return row
    return None
