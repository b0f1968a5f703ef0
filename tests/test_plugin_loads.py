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


def test_class_factory_registers_provider(qgis_app, qgis_iface):
    from qgis.core import QgsApplication

    import fusedeo

    plugin = fusedeo.classFactory(qgis_iface)
    plugin.initProcessing()
    try:
        provider = QgsApplication.processingRegistry().providerById("fusedeo")
        assert provider is not None
        ids = {algorithm.id() for algorithm in provider.algorithms()}
        assert {"fusedeo:embed", "fusedeo:trainprobe", "fusedeo:applyprobe", "fusedeo:evaluate"} <= ids
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("fusedeo") is None


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
