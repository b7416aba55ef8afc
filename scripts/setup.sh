#!/usr/bin/env bash
# Idempotent set-up used by both README commands:
#   1. Debian packages for headless rendering (only when root and missing),
#   2. .venv with torch and the exact pins of constraints.txt, dancegen installed editable.
# Re-running is a no-op once .venv matches pyproject.toml + constraints.txt + the torch spec.
#
# Environment:
#   PYTHON          interpreter for the venv (default: python3, must be 3.11+)
#   DANCEGEN_TORCH  torch requirement (default torch==2.13.0: the CPU wheel here; on a GPU host
#                   with PyPI's default index the same pin is the CUDA 12 build)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${DANCEGEN_TORCH:-torch==2.13.0}
APT_PACKAGES=(libosmesa6 libegl-mesa0 libgl1 docker-compose)  # docker-compose: validates the compose file (no engine needed)
STAMP=.venv/.dancegen-setup

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: missing Debian packages ${missing[*]} (needed for rendering); install them as root" >&2
  fi
fi

want=$(cat pyproject.toml constraints.txt <(echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/dancegen ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: $PYTHON is older than 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing into .venv ($TORCH_SPEC, then constraints.txt); takes a few minutes once"
.venv/bin/python -m pip install -q --upgrade "pip>=25" 2> >(grep -v "^WARNING: Location" >&2)
# word-split on purpose: DANCEGEN_TORCH may carry pip options, e.g. "torch==2.13.0 --index-url URL"
read -ra TORCH_ARGS <<< "$TORCH_SPEC"
.venv/bin/python -m pip install -q "${TORCH_ARGS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/python -m pip install -q -c constraints.txt -e ".[render,models,dev]" \
  2> >(grep -v "^WARNING: Location" >&2)
# LPIPS's linear-layer weights ship in the lpips package; its code needs torchvision, which has
# no build for the pinned torch, so only the package's files are installed (models/lpips.py is
# the network).
.venv/bin/python -m pip install -q --no-deps -c constraints.txt lpips \
  2> >(grep -v "^WARNING: Location" >&2)
# BlazePose's pretrained models (the evaluation's 2D pose detector when no DWPose weights are
# configured) ship inside PyPI's mediapipe wheel; mediapipe itself pins numpy<2, so only the two
# .tflite files are taken out of it (checksummed) and run with ai-edge-litert.
bash scripts/fetch_blazepose.sh .venv/share/dancegen/blazepose
# Compile librosa's numba kernels once, in one process: parallel first compiles in several Ray
# workers can corrupt numba's on-disk cache (see tasks/music_features.warm_up).
echo "setup: compiling librosa's numba kernels (once)"
.venv/bin/python -W ignore -c "from dancegen.tasks.music_features import warm_up; warm_up()"
echo "$want" > "$STAMP"
echo "setup: .venv ready"
