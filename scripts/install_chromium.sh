#!/usr/bin/env bash
# Install Debian's headless Chromium (for the report's browser test) unless one is on PATH.
# Prints the browser's path on stdout. Needs root (or sudo) for apt-get.
set -euo pipefail

say() { echo "install_chromium: $*" >&2; }

for name in chromium chromium-browser chromium-headless-shell; do
    if path=$(command -v "$name" 2>/dev/null); then
        say "found $path"
        echo "$path"
        exit 0
    fi
done

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "need root or sudo for apt-get"; exit 1; }
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
say "apt-get install chromium"
"${SUDO[@]}" apt-get update -qq >&2
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
path=$(command -v chromium) || { say "chromium installed but not on PATH"; exit 1; }
say "installed $path"
echo "$path"
