#!/usr/bin/env bash
# Install what ComfyUI-LatentSyncWrapper's host stacks add to an interpreter that already has torch
# (no multi-GB CUDA build: torch itself is never installed or replaced here).
#
#   bash scripts/install_comfy_stack.sh PYTHON [--torchcodec]
#
# ComfyUI's own media packages, as its stacks have them: torchaudio (2.11.1: a stable-ABI wheel that
# needs torch >= 2.11 and imports on any later torch), av (PyAV: its wheels bundle FFmpeg) and
# soundfile (its wheels bundle libsndfile), and imageio-ffmpeg (a bundled ffmpeg binary).
#
# --torchcodec also installs torchcodec, which the manual macOS stack (comfyui-manual-macos) has and
# which torchaudio's load/save go through from 2.9 on. torchcodec bundles no FFmpeg: it loads the
# system's shared libraries (FFmpeg 4 to 9). On Debian: `apt-get install ffmpeg` (as root). Without
# them, verify on that stack says that this interpreter cannot model it, never that the Mac failed.
set -euo pipefail
PYTHON="${1:?usage: install_comfy_stack.sh PYTHON [--torchcodec]}"
WITH_TORCHCODEC="${2:-}"
PIP=("$PYTHON" -m pip install --quiet --disable-pip-version-check)

"$PYTHON" -c "import torch" 2>/dev/null || { echo "install_comfy_stack: $PYTHON has no torch; install torch first" >&2; exit 1; }
# The torch family comes from LSYNC_PORT_TORCH_INDEX when set (CI: PyTorch's CPU index, whose builds
# load next to a CPU torch; PyPI's Linux torchaudio is a CUDA build that needs libc10_cuda), else from
# pip's own configuration. --no-deps: none of them may pull another torch.
TORCH_FAMILY=(${LSYNC_PORT_TORCH_INDEX:+--index-url "$LSYNC_PORT_TORCH_INDEX"} --no-deps)
MINOR="$("$PYTHON" -c "import torch; print(torch.__version__.split('.')[1])")"
"${PIP[@]}" "${TORCH_FAMILY[@]}" "torchaudio>=2.11"
# torchvision 0.(N+15) pairs with torch 2.N: the wrapper imports torchvision.io
"$PYTHON" -c "import torchvision" 2>/dev/null || "${PIP[@]}" "${TORCH_FAMILY[@]}" "torchvision==0.$((MINOR + 15)).*"
"${PIP[@]}" "av>=12" "soundfile>=0.12" "imageio-ffmpeg>=0.5"
if [ "$WITH_TORCHCODEC" = "--torchcodec" ]; then
  "${PIP[@]}" "${TORCH_FAMILY[@]}" "torchcodec"
  if ! ldconfig -p 2>/dev/null | grep -q "libavutil\.so"; then
    echo "install_comfy_stack: torchcodec needs FFmpeg's shared libraries, which are not installed here;" >&2
    echo "  on Debian/Ubuntu: apt-get install ffmpeg   (then torchaudio.save/load work through torchcodec)" >&2
  fi
fi
# What is usable now; exit 1 when a package the stacks need does not load.
"$PYTHON" - "$WITH_TORCHCODEC" <<'PY'
import importlib, sys
needed = ["torch", "torchaudio", "torchvision", "av", "soundfile", "imageio_ffmpeg"]
needed += ["torchcodec"] if sys.argv[1:] == ["--torchcodec"] else []
broken = []
for name in needed:
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')}")
    except Exception as error:  # noqa: BLE001 - reported below
        print(f"  {name}: not usable ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
        broken.append(name)
sys.exit(f"install_comfy_stack: not usable here: {', '.join(broken)}" if broken else 0)
PY
