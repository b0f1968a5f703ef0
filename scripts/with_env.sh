#!/usr/bin/env bash
# Run a command in the FusedEO headless environment (see scripts/env.sh).
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$@"
