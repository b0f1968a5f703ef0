"""fusedeo:embed with foundation models, their weights loaded through the weight store.

No published checkpoint is available here, so the tests write full-size
random weights in each model's official key layout and register them in the
encoders' cards, exactly as a downloaded file would be registered.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import LOCATION_A

torch = pytest.importorskip("torch")

from fusedeo.models.encoders import copernicusfm, dofa  # noqa: E402

SEASON_LAYERS = {
    "S2L2A_SUMMER": str(LOCATION_A / "s2l2a_summer.tif"),
    "S1_SUMMER": str(LOCATION_A / "s1_summer.tif"),
    "S2L2A_AUTUMN": str(LOCATION_A / "s2l2a_autumn.tif"),
    "S1_AUTUMN": str(LOCATION_A / "s1_autumn.tif"),
}


def register(module, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Point the module's card at the checkpoint ``path`` with its real sha256 and size."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    weights = dataclasses.replace(module.CARD.weights, sha256=digest, size_bytes=path.stat().st_size)
    monkeypatch.setattr(module, "CARD", dataclasses.replace(module.CARD, weights=weights))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:  # noqa: ANN001
    """A weight store folder with random DOFA and Copernicus-FM checkpoints in official layout."""
    folder = tmp_path_factory.mktemp("weights")
    model = dofa.DofaEncoder(random_weights=True, seed=11).model
    torch.save(dofa.official_checkpoint_state(model), folder / dofa.CARD.weights.file_name)
    torch.manual_seed(12)
    torch.save(copernicusfm.official_state_dict(copernicusfm.build_model()),
               folder / copernicusfm.CARD.weights.file_name)
    return folder


@pytest.fixture()
def store(checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUSEDEO_WEIGHTS_DIR", str(checkpoints))
    register(dofa, checkpoints / dofa.CARD.weights.file_name, monkeypatch)
    register(copernicusfm, checkpoints / copernicusfm.CARD.weights.file_name, monkeypatch)
    return checkpoints


def run_embed(processing, output: Path, **parameters):  # noqa: ANN001, ANN201
    values = {**SEASON_LAYERS, "ENCODERS": ["mosaiks", "dofa", "copernicusfm"], "PATCH_SIZE": 32,
              "STRIDE": 32, "DIMENSIONS": 3, "DEVICE": "cpu", "OUTPUT": str(output)}
    values.update(parameters)
    return processing.run("fusedeo:embed", values)


@pytest.mark.slow
def test_two_foundation_models_and_mosaiks(processing, store, tmp_path):
    run_embed(processing, tmp_path / "fused.tif", OUTPUT_FEATURES=str(tmp_path / "features"))
    dataset = gdal.Open(str(tmp_path / "fused.tif"))
    values = dataset.ReadAsArray()
    assert (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (2, 2, 3)
    assert np.all(np.isfinite(values))
    provenance = json.loads(dataset.GetMetadata()["FUSEDEO_PROVENANCE"])
    assert [block["name"] for block in provenance["layout"]] == ["mosaiks", "dofa", "copernicusfm"]
    assert provenance["layout"][2] == {"name": "copernicusfm", "channels": 768, "seasons": 4}
    assert provenance["weights"]["dofa"]["sha256"] == dofa.CARD.weights.sha256
    assert provenance["weights"]["copernicusfm"]["file"] == copernicusfm.CARD.weights.file_name
    assert "mosaiks" not in provenance["weights"]
    copernicus_settings = next(entry["settings"] for entry in provenance["encoders"]
                               if entry["name"] == "copernicusfm")
    assert copernicus_settings["s2_level"] == "l2a"
    assert copernicus_settings["random_weights"] is False

    from fusedeo.models.feature_store import FeatureStore

    features = FeatureStore.open(tmp_path / "features").features[:]
    width = sum(block["channels"] * block["seasons"] for block in provenance["layout"])
    assert features.shape == (4, width)
    copernicus_block = features[:, width - 768 * 4:].reshape(4, 768, 4)
    # Summer and autumn are encoded; spring and winter get the mean of the two.
    np.testing.assert_allclose(copernicus_block[..., 0], copernicus_block[..., 1:3].mean(axis=-1), rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(copernicus_block[..., 1], copernicus_block[..., 2])


def test_missing_checkpoint_names_file_and_place(processing, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    empty = tmp_path / "empty_store"
    empty.mkdir()
    monkeypatch.setenv("FUSEDEO_WEIGHTS_DIR", str(empty))
    info = dofa.CARD.weights
    with pytest.raises(QgsProcessingException, match=rf"The checkpoint {info.file_name} \(445,295,690 bytes.*"
                                                     rf"{info.url}.*place it at {empty / info.file_name}"):
        run_embed(processing, tmp_path / "out.tif", ENCODERS=["mosaiks", "dofa"])
    assert not (tmp_path / "out.tif").exists()


def test_tampered_checkpoint_rejected(processing, store, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    original = store / dofa.CARD.weights.file_name
    copy = tampered / original.name
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setenv("FUSEDEO_WEIGHTS_DIR", str(tampered))
    with pytest.raises(QgsProcessingException, match="sha256"):
        run_embed(processing, tmp_path / "out.tif", ENCODERS=["dofa"])
    assert not (tmp_path / "out.tif").exists()


def test_encoder_needing_s1_rejected_before_loading(processing, store, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"ENCODERS: copernicusfm needs s1 layers, but none were given"):
        run_embed(processing, tmp_path / "out.tif", S1_SUMMER=None, S1_AUTUMN=None, ENCODERS=["copernicusfm"])
