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
    expected = {"fusedeo:embed", "fusedeo:trainprobe", "fusedeo:applyprobe", "fusedeo:traincompressor",
                "fusedeo:evaluate", "fusedeo:embedssl4eo", "fusedeo:checksubmission", "fusedeo:downloadweights"}
    assert set(eval(lines[-2])) == expected
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


def test_package_zip_installs_and_loads(tmp_path):
    """The zip from make package unpacks to a fusedeo folder that QGIS loads."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "package.sh")], check=True, capture_output=True)
    archive = next((REPO_ROOT / "dist").glob("fusedeo-*.zip"))
    with zipfile.ZipFile(archive) as package:
        names = package.namelist()
        assert all(name.startswith("fusedeo/") for name in names)
        assert "fusedeo/metadata.txt" in names
        assert not any(name.startswith(("fusedeo/tests/", "fusedeo/.venv", "fusedeo/scripts/")) for name in names)
        package.extractall(tmp_path / "plugins")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'plugins')!r})\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False)\n"
        "app.initQgis()\n"
        "import qgis.utils\n"
        "assert qgis.utils.loadPlugin('fusedeo') and qgis.utils.startProcessingPlugin('fusedeo')\n"
        "import fusedeo\n"
        "print(fusedeo.__file__)\n"
        "print(len(QgsApplication.processingRegistry().providerById('fusedeo').algorithms()))\n"
    )
    environment = {key: value for key, value in __import__("os").environ.items() if key != "PYTHONPATH"}
    environment["PYTHONPATH"] = "/usr/share/qgis/python/plugins"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                               env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    location, count = completed.stdout.strip().splitlines()[-2:]
    assert location.startswith(str(tmp_path / "plugins" / "fusedeo"))
    assert int(count) >= 3


def test_missing_package_named_with_install_hint(tmp_path):
    """Without torch and onnxruntime the plugin loads and embed names the package to install."""
    import subprocess
    import sys

    from conftest import LOCATION_A

    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchgeo', 'onnxruntime'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked by the test)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from qgis.core import QgsApplication, QgsProcessingException\n"
        "app = QgsApplication([], False)\n"
        "app.initQgis()\n"
        "from processing.core.Processing import Processing\n"
        "Processing.initialize()\n"
        "import qgis.utils, processing\n"
        "assert qgis.utils.loadPlugin('fusedeo') and qgis.utils.startProcessingPlugin('fusedeo')\n"
        "try:\n"
        f"    processing.run('fusedeo:embed', {{'S2L2A_SUMMER': {str(LOCATION_A / 's2l2a_summer.tif')!r},\n"
        f"        'PATCH_SIZE': 16, 'STRIDE': 16, 'OUTPUT': {str(tmp_path / 'out.tif')!r}}})\n"
        "except QgsProcessingException as err:\n"
        "    print(err)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "The Python package 'torch' is needed for running encoders" in completed.stdout
    assert "python3 -m pip install torch" in completed.stdout
    assert not (tmp_path / "out.tif").exists()


def test_help_shows_placeholders_as_written(processing):
    """QGIS shows the help as rich text, where an unescaped <task> would vanish."""
    import re

    from qgis.core import QgsApplication
    from qgis.PyQt.QtGui import QTextDocument

    provider = QgsApplication.processingRegistry().providerById("fusedeo")
    for algorithm in provider.algorithms():
        raw = " ".join([algorithm.SUMMARY, *(text for _, text in algorithm.PARAMETER_HELP.values())])
        document = QTextDocument()
        document.setHtml(algorithm.shortHelpString())
        shown = document.toPlainText()
        for placeholder in re.findall(r"<[^<>]+>", raw):
            assert placeholder in shown, f"{algorithm.id()}: {placeholder} is missing from the rendered help"


def test_ctrl_c_cancels_algorithm_on_main_thread(processing):
    """qgis_process runs algorithms on its main thread, where SIGINT must reach the feedback."""
    import os
    import signal

    from qgis.core import QgsApplication, QgsProcessingFeedback

    algorithm = QgsApplication.processingRegistry().algorithmById("fusedeo:evaluate")
    feedback = QgsProcessingFeedback()
    before = signal.getsignal(signal.SIGINT)
    with algorithm.interrupt_cancels(feedback):
        os.kill(os.getpid(), signal.SIGINT)
        assert feedback.isCanceled()
    assert signal.getsignal(signal.SIGINT) is before
