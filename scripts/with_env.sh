#!/usr/bin/env bash
# Run a command in the FusedEO headless environment (see scripts/env.sh).
set -euo pipefail
given_runtime_dir=${FUSEDEO_RUNTIME_DIR:-}
source "$(dirname "$0")/env.sh"
if [ -n "$given_runtime_dir" ]; then
    exec "$@"
fi
# env.sh made a temporary QGIS profile for this command; remove it afterwards.
trap 'rm -rf "$FUSEDEO_RUNTIME_DIR"' EXIT
"$@"
