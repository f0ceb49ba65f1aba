"""Run doctor's probe (payload/probe.py) in an interpreter: the facts it prints, or why it failed.

The probe's source goes in on stdin, in an empty folder, so that nothing local shadows a package
and an interpreter of any age can run it (no file path, no sibling to load).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

PROBE = Path(__file__).resolve().parent.parent / "payload" / "probe.py"
PROBE_TIMEOUT_S = 300  # a cold import of torch + insightface on a slow disk can take a minute


def run_probe(python: str, helper: Path | None, timeout: float = PROBE_TIMEOUT_S) -> tuple[dict | None, str | None]:
    """Run probe.py in `python` (source on stdin, in an empty folder so nothing local shadows a
    package). Returns (facts, None) or (None, why it failed)."""
    command = [python, "-"] + (["--helper", str(helper)] if helper else [])
    with tempfile.TemporaryDirectory(prefix="lsync-port-doctor-") as cwd:
        try:
            done = subprocess.run(
                command,
                input=PROBE.read_text(encoding="utf-8"),
                capture_output=True,
                text=True,
                cwd=cwd,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None, f"the probe did not finish in {timeout:g} s"
        except OSError as error:
            return None, f"cannot run it: {error}"
    lines = done.stdout.strip().splitlines()
    try:
        facts = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        facts = None
    if done.returncode != 0 or not isinstance(facts, dict):
        tail = " ".join(done.stderr.strip().splitlines()[-3:])[-500:]
        return None, f"the probe exited with {done.returncode}" + (f": {tail}" if tail else "")
    return facts, None
