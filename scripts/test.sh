#!/usr/bin/env bash
# Set up everything and run the whole test suite: bash scripts/test.sh [pytest args]
# The services some tests need (PostgreSQL on loopback, headless Chromium) are installed and
# started here; under CI (CI set) a test whose service is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/install_chromium.sh
# starts a throwaway PostgreSQL cluster on 127.0.0.1 and prints `export OPTIMIST_TEST_POSTGRES_URL=...`
eval "$(bash scripts/start_postgres.sh)"
trap 'bash scripts/start_postgres.sh stop >/dev/null 2>&1 || true' EXIT

python3 -m pytest -q "$@"
if [ "$#" -eq 0 ]; then
    # the accelerator paths (tests/cuda: foreach, buckets, torch's fused kernels, state on the
    # device), skipped above without a GPU, run again with the CPU as the device
    OPTIMIST_TEST_DEVICE=cpu python3 -m pytest -q tests/cuda
fi
