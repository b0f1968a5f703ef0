#!/usr/bin/env bash
# Run the FusedEO demo (scripts/demo.py) in the headless QGIS environment.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/env.sh"
trap 'rm -rf "$FUSEDEO_RUNTIME_DIR"' EXIT
"$root/.venv/bin/python" "$root/scripts/demo.py" "$@"
