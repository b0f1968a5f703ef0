#!/usr/bin/env bash
# Run the test suite headless in real QGIS. Tests read the real Sentinel
# fixtures in ../shared/data in place; without them the run fails rather than
# skipping the end-to-end tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$root/../shared/data/worldcereal-be" ]; then
    echo "run_tests: ../shared/data/worldcereal-be not found beside the repository;" \
         "the end-to-end tests need it (clone next to the shared folder)." >&2
    exit 1
fi
source "$root/scripts/env.sh"
cd "$root"
trap 'rm -rf "$FUSEDEO_RUNTIME_DIR"' EXIT
# A base folder of this run's own: with the retention policy "none" in
# pytest.ini, a pytest session that ends deletes the shared
# /tmp/pytest-of-<user> folders, including those of a run still going.
"$root/.venv/bin/python" -m pytest --basetemp="$FUSEDEO_RUNTIME_DIR/pytest" "$@"
