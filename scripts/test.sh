#!/usr/bin/env bash
# Set up a virtual environment and run the whole test suite. This is the README's test command,
# and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${LSYNC_PORT_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# The pinned torch first, the one the suite's expectations are for (the MPS simulator's tables,
# its counts): a bare `torch` (or an open range such as the verify extra's) could otherwise pull a
# multi-GB CUDA build. An environment with another torch gets the pin. CI sets
# LSYNC_PORT_TORCH_INDEX to PyTorch's CPU index; without it pip uses its own configuration.
TORCH_PIN="2.13.0"
installed_torch() { "$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true; }
if [ "$(installed_torch)" != "$TORCH_PIN" ]; then
  "${PIP[@]}" ${LSYNC_PORT_TORCH_INDEX:+--index-url "$LSYNC_PORT_TORCH_INDEX"} "torch==$TORCH_PIN"
fi
"${PIP[@]}" -e ".[test,verify]"
if [ "$(installed_torch)" != "$TORCH_PIN" ]; then
  echo "scripts/test.sh: torch $TORCH_PIN is needed, found '$(installed_torch)'" >&2
  exit 1
fi

# The wrapper's host stacks (tests/test_comfy_stacks.py) run the wrapper fixture with torchaudio,
# torchvision, torchcodec, av and soundfile. With PyTorch's CPU index (LSYNC_PORT_TORCH_INDEX, the
# GitHub workflow) their CPU builds go into this venv. Without it, the registry's Linux torchaudio is
# a CUDA build that cannot load next to the CPU torch above: they get an interpreter of their own,
# made once, on torch 2.14.1 (on this project's machines its wheels lie on disk; elsewhere pip
# downloads the CUDA build, several GB). LSYNC_PORT_COMFY_PYTHON names an interpreter to use instead.
if [ -n "${LSYNC_PORT_TORCH_INDEX:-}" ]; then
  bash scripts/install_comfy_stack.sh "$VENV/bin/python" --torchcodec
elif [ -z "${LSYNC_PORT_COMFY_PYTHON:-}" ]; then
  COMFY_VENV="${LSYNC_PORT_COMFY_VENV:-.venv-comfy}"
  if ! "$COMFY_VENV/bin/python" -c "import torchaudio, torchvision, torchcodec, av, soundfile, diffusers, omegaconf" 2>/dev/null; then
    echo "scripts/test.sh: making $COMFY_VENV (torch 2.14.1 and the ComfyUI stacks' media packages) for tests/test_comfy_stacks.py"
    [ -x "$COMFY_VENV/bin/python" ] || python3 -m venv "$COMFY_VENV"
    COMFY_PIP=("$COMFY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${COMFY_PIP[@]}" torch==2.14.1 torchvision==0.29.1
    "${COMFY_PIP[@]}" -e ".[verify]"
    bash scripts/install_comfy_stack.sh "$COMFY_VENV/bin/python" --torchcodec
  fi
  LSYNC_PORT_COMFY_PYTHON="$(cd "$COMFY_VENV" && pwd)/bin/python"
  export LSYNC_PORT_COMFY_PYTHON
fi
# torchcodec (the manual macOS stack's torchaudio.save) loads FFmpeg's shared libraries. As root on
# Debian (CI) they are installed here; otherwise the command that installs them is named, and the
# manual stack's fixture tests fail until then.
if ! ldconfig -p 2>/dev/null | grep -q "libavutil\.so"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing Debian's ffmpeg (FFmpeg's shared libraries, for torchcodec)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "scripts/test.sh: FFmpeg's shared libraries are missing: the manual macOS stack's tests need them (Debian: sudo apt-get install ffmpeg)" >&2
  fi
fi

"$VENV/bin/ruff" check src tests scripts
# pytest exits 5 when it collects no test; set -e turns that into a failure, as it should.
# Here every extra is installed, so a test skipped for a missing extra is a set-up bug: fail it.
# One worker per core (pytest-xdist), each taking whole files (--dist loadfile): a module's
# shared set-up (its module-scoped fixtures) runs once, and tests that judge the other tests of
# their file (test_kill.py's last) see them all. LSYNC_PORT_TEST_WORKERS=0 runs in this process;
# arguments given to this script come after these, so its `-n 0` wins too.
# Each worker keeps a core busy, so torch's own threads (in the verify and forecast children) would
# only contend for it: one each (on a busy 2-core machine a CPU verify of the fixture took 13 s of
# CPU time with one thread, 21 s with two).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LSYNC_PORT_REQUIRE_EXTRAS=1 "$VENV/bin/python" -m pytest -n "${LSYNC_PORT_TEST_WORKERS:-auto}" --dist loadfile "$@"
