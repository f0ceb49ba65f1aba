"""Write patches/forecast-measured.json from `lsync-port forecast --json` reports of real releases.

    lsync-port forecast /tmp/ls-1.6 --python /work/venv-ls/bin/python --json > 1.6.json   (a ported copy)
    python scripts/ship_forecast.py 1.5.json 1.6.json main.json

doctor's "memory" check reads the result (a live forecast takes a minute or more). Only the
figures are kept: per release, its size, the torch that measured it, and one row per configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from latentsync_mps.pack.forecast_tables import MEASURED_FILE  # noqa: E402
from latentsync_mps.pack.paths import patches_dir  # noqa: E402

ROW_KEYS = ("device", "dtype", "chunking", "peak_bytes", "largest_buffer_bytes", "weights_bytes", "largest_buffer_op")
# The counted work per phase (FLOPs, bytes, intensity bins): doctor's time per chunk on this Mac.
WORK_KEYS = ("flops", "bytes", "attention_flops", "attention_bytes", "bins")


def _work(row: dict) -> dict:
    """The phases' work; of the denoising steps only the last (each later step repeats it)."""
    work = row.get("work") or {}
    steps = sorted((n for n in work if n.startswith("denoise step")), key=lambda n: int(n.split()[-1]))
    keep = [n for n in work if not n.startswith("denoise step")] + steps[-1:]
    return {name: {k: work[name][k] for k in WORK_KEYS} for name in keep}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="forecast --json outputs, one per release")
    args = parser.parse_args()
    target = patches_dir() / MEASURED_FILE
    shipped = json.loads(target.read_text()) if target.exists() else {"releases": {}}
    for path in args.reports:
        report = json.loads(path.read_text())
        if report.get("reason") or not report.get("release"):
            print(f"{path}: not a complete forecast of a known release ({report.get('reason')}); skipped")
            continue
        rows = [
            {**{k: row[k] for k in ROW_KEYS}, "work": _work(row)}
            for row in report["configurations"]
            if row["status"] == "pass"
        ]
        shipped["releases"][report["release"]] = {
            "release": report["release"],
            "config": report["config"],
            "resolution": report["resolution"],
            "frames": report["frames"],
            "steps": report["steps"],
            "torch": report["torch"],
            "configurations": rows,
        }
        print(f"{report['release']}: {len(rows)} configurations at {report['resolution']}x{report['resolution']}")
    shipped["about"] = (
        "lsync-port forecast on ported copies of the real releases (scripts/ship_forecast.py); "
        "peak_bytes includes the weights; one 16-frame chunk, classifier-free guidance; work: FLOPs, bytes "
        "moved and the roofline's intensity bins per phase (forecast's work.py; the last denoising step stands "
        "for every step)"
    )
    target.write_text(json.dumps(shipped, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
