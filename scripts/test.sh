#!/usr/bin/env bash
# The test command: set up if needed, lint, then the whole test suite (real Prefect server,
# real local Ray, real Zarr, a local S3 server). Extra arguments go to pytest.
# Two pytest-xdist workers, one test file each at a time, each with its own Prefect server, Ray
# and S3 server: much of the suite waits on servers and subprocesses, so two workers on 2 cores
# take 15-17 minutes where one took 20 (keeping the files on the trained LDM store on one
# worker, so that it is built once, was slower: 16:42). DANCEGEN_TEST_WORKERS=0: one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
workers=${DANCEGEN_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
