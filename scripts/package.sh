#!/usr/bin/env bash
# Build dist/fusedeo-<version>.zip for QGIS's "Install from ZIP": the plugin
# folder named fusedeo, with the committed files only (no tests, scripts,
# benchmarks or local environment).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version=//p' "$root/metadata.txt")
mkdir -p "$root/dist"
archive="$root/dist/fusedeo-$version.zip"
rm -f "$archive"
cd "$root"
git archive --format=zip --prefix=fusedeo/ -o "$archive" HEAD -- \
    metadata.txt __init__.py errors.py reporting.py plugin models raster $(ls -d neuco 2>/dev/null) resources README.md LICENSE 2>/dev/null \
    || git archive --format=zip --prefix=fusedeo/ -o "$archive" HEAD -- \
        metadata.txt __init__.py errors.py reporting.py plugin models raster resources README.md
echo "package: $archive"
