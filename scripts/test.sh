#!/usr/bin/env bash
# The test command: set up if needed, lint, then the whole test suite (real Prefect server,
# real local Ray, real Zarr, a local S3 server). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
