#!/usr/bin/env bash
# Set up a virtual environment and run the whole test suite. This is the README's test command,
# and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${LSYNC_PORT_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# The pinned CPU build first: a bare `torch` (or an open range such as the verify extra's) could
# otherwise pull a multi-GB CUDA build. An environment that already has torch keeps it.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[test,verify]"

"$VENV/bin/ruff" check src tests scripts
# pytest exits 5 when it collects no test; set -e turns that into a failure, as it should.
# Here every extra is installed, so a test skipped for a missing extra is a set-up bug: fail it.
LSYNC_PORT_REQUIRE_EXTRAS=1 "$VENV/bin/python" -m pytest "$@"
