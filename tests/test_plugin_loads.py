"""The plugin loads as QGIS loads it and registers its provider."""

import configparser

from conftest import REPO_ROOT


def test_metadata_fields():
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "metadata.txt")
    general = parser["general"]
    assert general["name"] == "FusedEO"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    import fusedeo

    assert general["version"] == fusedeo.__version__


def test_qgis_loads_plugin_and_provider():
    """Load the plugin the way QGIS does (qgis.utils), in a fresh QGIS process."""
    import subprocess
    import sys

    code = (
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False)\n"
        "app.initQgis()\n"
        "import qgis.utils\n"
        "assert qgis.utils.loadPlugin('fusedeo')\n"
        "assert qgis.utils.startProcessingPlugin('fusedeo')\n"
        "registry = QgsApplication.processingRegistry()\n"
        "provider = registry.providerById('fusedeo')\n"
        "print(sorted(algorithm.id() for algorithm in provider.algorithms()))\n"
        "qgis.utils.plugins['fusedeo'].unload()\n"
        "print(registry.providerById('fusedeo') is None)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert {"fusedeo:embed", "fusedeo:trainprobe", "fusedeo:applyprobe"} <= set(eval(lines[-2]))
    assert lines[-1] == "True"


def test_core_imports_without_qgis():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fusedeo.models.encoders, fusedeo.raster.bands, fusedeo.errors\n"
        "bad = [name for name in sys.modules if name.startswith(('qgis', 'torch', 'onnxruntime'))]\n"
        "print(','.join(bad))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert output == ""
