#!/usr/bin/env bash
# Install everything FusedEO needs on a Debian 12 machine, idempotently:
# the Debian QGIS packages, then a virtual environment in .venv on Debian's
# Python 3.11 (the interpreter PyQGIS is built for).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.fusedeo-setup"
apt_packages=(qgis python3-qgis qgis-providers libgdal-dev python3-venv python3-dev build-essential)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

wanted=$(sha256sum "$root/requirements.txt" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
echo "setup: installing Python packages (first run: a few minutes)"
"$venv/bin/pip" install -q --upgrade "pip<26"
"$venv/bin/pip" install -q --no-binary rasterio,pyogrio,shapely \
    -r "$root/requirements.txt"
echo "$wanted" > "$stamp"
echo "setup: done"
