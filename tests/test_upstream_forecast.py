"""Opt-in: `lsync-port forecast` on real LatentSync checkouts (a ported copy of each).

    LSYNC_UPSTREAM=/path/LatentSync[:...] LSYNC_UPSTREAM_PYTHON=/path/venv/bin/python \\
        pytest tests/test_upstream_forecast.py

The interpreter needs the upstream's stack (scripts/upstream-stack.txt). Skipped without the
variables; tests/test_forecast.py covers the same properties on the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentsync_mps.cli import app
from latentsync_mps.features.forecast import CONFIGURATIONS, METAL_BUFFER_LIMIT

TREES = [Path(p) for p in os.environ.get("LSYNC_UPSTREAM", "").split(os.pathsep) if p]
PYTHON = os.environ.get("LSYNC_UPSTREAM_PYTHON")
pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not (TREES and PYTHON), reason="set LSYNC_UPSTREAM and LSYNC_UPSTREAM_PYTHON to run these"),
]
runner = CliRunner()
# The release's own inference size (its inference.sh's config): 1.0 and 1.5 at 256, later at 512.
CHUNK_BUDGET = 2**30  # the port's default chunk budget (LATENTSYNC_MPS_ATTENTION_CHUNK_BYTES)
RESOLUTION = {"1.0": 256, "1.5": 256, "1.6": 512, "main": 512}


@pytest.mark.parametrize("source", TREES, ids=[p.name for p in TREES])
def test_real_release_forecast_reports_every_configuration(source, tmp_path):
    tree = tmp_path / source.name
    shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git", "checkpoints"))
    assert runner.invoke(app, ["apply", str(tree)]).exit_code == 0
    result = runner.invoke(app, ["forecast", str(tree), "--python", PYTHON, "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0, report["reason"]
    assert report["ported"] and report["frames"] == 16
    assert report["resolution"] == RESOLUTION[report["release"]]
    rows = {(r["device"], r["dtype"], r["chunking"]): r for r in report["configurations"]}
    assert set(rows) == set(CONFIGURATIONS)
    assert all(r["status"] == "pass" and r["peak_bytes"] > r["weights_bytes"] > 0 for r in rows.values())
    for dtype in ("float16", "float32"):
        on, off = rows[("mps", dtype, True)], rows[("mps", dtype, False)]
        assert on["largest_buffer_bytes"] <= off["largest_buffer_bytes"] and on["peak_bytes"] <= off["peak_bytes"]
        if off["largest_buffer_bytes"] > CHUNK_BUDGET:  # 512x512: the score matrix is cut into pieces
            assert on["largest_buffer_bytes"] < off["largest_buffer_bytes"] and on["peak_bytes"] < off["peak_bytes"]
        assert on["largest_buffer_bytes"] <= METAL_BUFFER_LIMIT
    assert rows[("mps", "float32", True)]["peak_bytes"] > rows[("mps", "float16", True)]["peak_bytes"]
