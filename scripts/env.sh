# Environment for running FusedEO headless from the repository: source it.
# Makes the repository importable as the package `fusedeo` (QGIS loads a
# plugin by its folder name), keeps QGIS and onnxruntime out of $HOME, and
# points QGIS and Python at the virtual environment.
fusedeo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$fusedeo_root/.build/plugins"
ln -sfn "$fusedeo_root" "$fusedeo_root/.build/plugins/fusedeo"

export FUSEDEO_ROOT="$fusedeo_root"
export FUSEDEO_RUNTIME_DIR=${FUSEDEO_RUNTIME_DIR:-$(mktemp -d -t fusedeo-runtime-XXXXXX)}
export QT_QPA_PLATFORM=offscreen
export QGIS_CUSTOM_CONFIG_PATH="$FUSEDEO_RUNTIME_DIR/qgis-config"
export XDG_CONFIG_HOME="$FUSEDEO_RUNTIME_DIR/config"
export XDG_CACHE_HOME="$FUSEDEO_RUNTIME_DIR/cache"
export XDG_DATA_HOME="$FUSEDEO_RUNTIME_DIR/data"
export XDG_RUNTIME_DIR="$FUSEDEO_RUNTIME_DIR/run"
mkdir -p "$QGIS_CUSTOM_CONFIG_PATH" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME" "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
export QGIS_PLUGINPATH="$fusedeo_root/.build/plugins"
export PYTHONPATH="$fusedeo_root/.build/plugins:/usr/share/qgis/python/plugins:$fusedeo_root/.venv/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export PROJ_DATA=/usr/share/proj
# Checkpoints are large: keep them in one persistent folder, not in the
# temporary QGIS profile of this shell.
export FUSEDEO_WEIGHTS_DIR=${FUSEDEO_WEIGHTS_DIR:-$HOME/.cache/fusedeo/weights}
# Let qgis_process.bin load the plugin from QGIS_PLUGINPATH.
qgis_process.bin plugins enable fusedeo >/dev/null 2>&1 || true
