#!/usr/bin/env bash
# Build dist/fusedeo-<version>.zip for QGIS's "Install from ZIP": the plugin
# folder named fusedeo, with the committed plugin files only (no tests,
# scripts, benchmarks or local environment).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version=//p' metadata.txt)
mkdir -p dist
archive="dist/fusedeo-$version.zip"
rm -f "$archive"
paths=()
for path in metadata.txt __init__.py errors.py reporting.py plugin models raster neuco resources README.md LICENSE; do
    if [ -n "$(git ls-tree -r --name-only HEAD -- "$path")" ]; then paths+=("$path"); fi
done
git archive --format=zip --prefix=fusedeo/ -o "$archive" HEAD -- "${paths[@]}"
echo "package: $root/$archive"
