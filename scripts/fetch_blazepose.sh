#!/usr/bin/env bash
# Idempotent: puts Google's BlazePose models (MediaPipe Pose "full": pose_detection.tflite and
# pose_landmark_full.tflite) into a folder, taken out of PyPI's mediapipe 0.10.21 wheel.
# mediapipe itself is not installed (it pins numpy<2); dancegen runs the two files with
# ai-edge-litert (tasks/blazepose.py).
#
#   scripts/fetch_blazepose.sh [FOLDER]     FOLDER defaults to .venv/share/dancegen/blazepose
#
# Environment:
#   PYTHON            interpreter with pip (default: .venv/bin/python, else python3)
#   BLAZEPOSE_WHEEL   a local copy of the wheel to extract from instead of downloading it
# Exits non-zero, saying why, when the download, the extraction or a checksum fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${1:-$ROOT/.venv/share/dancegen/blazepose}
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON=$ROOT/.venv/bin/python; else DEFAULT_PYTHON=python3; fi
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

WHEEL=mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3
# file name, path inside the wheel, sha256
FILES=(
  "pose_detection.tflite mediapipe/modules/pose_detection/pose_detection.tflite 9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
  "pose_landmark_full.tflite mediapipe/modules/pose_landmark/pose_landmark_full.tflite e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
)

fail() { echo "fetch_blazepose: $*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

all_present() {
  local entry name path sum
  for entry in "${FILES[@]}"; do
    read -r name path sum <<<"$entry"
    [ -f "$TARGET/$name" ] && [ "$(sha256 "$TARGET/$name")" = "$sum" ] || return 1
  done
  [ -f "$TARGET/SOURCE.txt" ]
}

if all_present; then
  echo "fetch_blazepose: $TARGET already holds the BlazePose models"
  exit 0
fi

mkdir -p "$TARGET" || fail "cannot create $TARGET"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ -n "${BLAZEPOSE_WHEEL:-}" ]; then
  [ -f "$BLAZEPOSE_WHEEL" ] || fail "BLAZEPOSE_WHEEL=$BLAZEPOSE_WHEEL is not a file"
  wheel=$BLAZEPOSE_WHEEL
else
  echo "fetch_blazepose: downloading $WHEEL (about 36 MB)"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: mediapipe==0.10.21 \
      --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$TMP" \
    || fail "pip could not download mediapipe==0.10.21 ($PYTHON -m pip download)"
  wheel=$TMP/$WHEEL
  [ -f "$wheel" ] || fail "pip did not produce $WHEEL in $TMP (got: $(ls "$TMP"))"
fi
got=$(sha256 "$wheel")
[ "$got" = "$WHEEL_SHA256" ] || fail "$wheel: sha256 $got, expected $WHEEL_SHA256"

for entry in "${FILES[@]}"; do
  read -r name path sum <<<"$entry"
  "$PYTHON" - "$wheel" "$path" "$TMP/$name" <<'EOF' || fail "cannot extract $path from $wheel"
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  got=$(sha256 "$TMP/$name")
  [ "$got" = "$sum" ] || fail "$path in $wheel: sha256 $got, expected $sum"
done

for entry in "${FILES[@]}"; do
  read -r name path sum <<<"$entry"
  mv -f "$TMP/$name" "$TARGET/$name"
done
{
  echo "wheel: $WHEEL"
  echo "wheel_sha256: $WHEEL_SHA256"
  echo "origin: https://pypi.org/project/mediapipe/0.10.21/"
  for entry in "${FILES[@]}"; do
    read -r name path sum <<<"$entry"
    echo "file: $name <- $path sha256 $sum"
  done
} >"$TARGET/SOURCE.txt"
if [ -z "${BLAZEPOSE_WHEEL:-}" ]; then rm -f "$TMP/$WHEEL"; fi  # the downloaded wheel is deleted
all_present || fail "$TARGET does not hold the expected files after extraction"
echo "fetch_blazepose: wrote ${FILES[*]%% *} to $TARGET"
