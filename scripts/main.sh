#!/usr/bin/env bash
# The main job on the embedded default: local Prefect server (started and stopped here),
# local Ray, local Zarr store under runs/demo, configs/local-cpu.yaml, fully offline.
# Extra arguments go to `dancegen demo` (e.g. --workdir DIR, --set key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/dancegen demo "$@"
