"""The whole job: embed → trainprobe → applyprobe, across locations and as a graphical model."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import LOCATION_A, LOCATION_B, REPO_ROOT, season_layers

PATCH_PX = 8
CROPLAND_CODE = 11


def cropland_fraction(location: Path, patch_px: int) -> np.ndarray:
    """True per-patch fraction of land-cover code 11 among labelled pixels (NaN when none)."""
    codes = gdal.Open(str(location / "landcover.tif")).ReadAsArray()
    rows, cols = codes.shape[0] // patch_px, codes.shape[1] // patch_px
    blocks = codes[:rows * patch_px, :cols * patch_px].reshape(rows, patch_px, cols, patch_px)
    labelled = (blocks != 0).sum(axis=(1, 3))
    cropland = (blocks == CROPLAND_CODE).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, cropland / labelled, np.nan)


def test_cropland_probe_transfers_to_other_location(processing, tmp_path):
    common = {"PATCH_SIZE": PATCH_PX, "STRIDE": PATCH_PX, "DEVICE": "cpu", "DIMENSIONS": 32}
    processing.run("fusedeo:embed", {**season_layers(LOCATION_A), **common, "OUTPUT": str(tmp_path / "a.tif"),
                                     "OUTPUT_EMBEDDING_MODEL": str(tmp_path / "a.fusedeo")})
    trained = processing.run("fusedeo:trainprobe", {
        "EMBEDDINGS": str(tmp_path / "a.tif"), "LABELS_RASTER": str(LOCATION_A / "landcover.tif"),
        "CLASS_VALUES": str(CROPLAND_CODE), "TASK": "regression", "TASK_NAME": "cropland_fraction",
        "OUTPUT_PROBE": str(tmp_path / "cropland.onnx"), "OUTPUT_REPORT": str(tmp_path / "report.html"),
    })
    processing.run("fusedeo:embed", {**season_layers(LOCATION_B), **common, "OUTPUT": str(tmp_path / "b.tif"),
                                     "EMBEDDING_MODEL": str(tmp_path / "a.fusedeo")})
    applied = processing.run("fusedeo:applyprobe", {
        "EMBEDDINGS": str(tmp_path / "b.tif"), "PROBE": trained["OUTPUT_PROBE"],
        "OUTPUT": str(tmp_path / "b_cropland.tif"),
    })

    prediction = gdal.Open(applied["OUTPUT"])
    embedding_b = gdal.Open(str(tmp_path / "b.tif"))
    assert prediction.GetGeoTransform() == embedding_b.GetGeoTransform()
    assert prediction.GetProjection() == embedding_b.GetProjection()
    predicted = prediction.ReadAsArray()
    truth = cropland_fraction(LOCATION_B, PATCH_PX)
    assert predicted.shape == truth.shape == (8, 8)
    assert np.all(np.isfinite(predicted))
    known = np.isfinite(truth)
    correlation = np.corrcoef(predicted[known], truth[known])[0, 1]
    # A probe without skill on the unseen location would give about 0.
    assert correlation > 0.4


def build_chain_model():  # noqa: ANN201 (QgsProcessingModelAlgorithm)
    """Build the model a user draws in the modeler: embed, then train and apply a probe."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("seasonal cropland map", "FusedEO")
    for name in ("s2_summer", "s2_autumn", "s1_summer", "labels"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    from_input = QgsProcessingModelChildParameterSource.fromModelParameter
    from_child = QgsProcessingModelChildParameterSource.fromChildOutput

    embed = QgsProcessingModelChildAlgorithm("fusedeo:embed")
    embed.setChildId("embed")
    embed.addParameterSources("S2L2A_SUMMER", [from_input("s2_summer")])
    embed.addParameterSources("S2L2A_AUTUMN", [from_input("s2_autumn")])
    embed.addParameterSources("S1_SUMMER", [from_input("s1_summer")])
    for name, value in (("ENCODERS", ["mosaiks"]), ("PATCH_SIZE", PATCH_PX), ("STRIDE", PATCH_PX),
                        ("DIMENSIONS", 16), ("DEVICE", "cpu"), ("S2_OFFSET", "without_offset")):
        embed.addParameterSources(name, [static(value)])
    model.addChildAlgorithm(embed)

    train = QgsProcessingModelChildAlgorithm("fusedeo:trainprobe")
    train.setChildId("train")
    train.addParameterSources("EMBEDDINGS", [from_child("embed", "OUTPUT")])
    train.addParameterSources("LABELS_RASTER", [from_input("labels")])
    train.addParameterSources("CLASS_VALUES", [static(str(CROPLAND_CODE))])
    train.addParameterSources("TASK", [static("regression")])
    train.addParameterSources("TASK_NAME", [static("cropland_fraction")])
    model.addChildAlgorithm(train)

    apply = QgsProcessingModelChildAlgorithm("fusedeo:applyprobe")
    apply.setChildId("apply")
    apply.addParameterSources("EMBEDDINGS", [from_child("embed", "OUTPUT")])
    apply.addParameterSources("PROBE", [from_child("train", "OUTPUT_PROBE")])
    output = QgsProcessingModelOutput("prediction")
    output.setChildId("apply")
    output.setChildOutputName("OUTPUT")
    apply.setModelOutputs({"prediction": output})
    model.addChildAlgorithm(apply)
    return model


@pytest.fixture(scope="module")
def chain_model_file(processing, tmp_path_factory) -> Path:  # noqa: ANN001
    """The chain saved as a .model3 file, as the modeler saves it."""
    path = tmp_path_factory.mktemp("model") / "cropland_chain.model3"
    assert build_chain_model().toFile(str(path))
    return path


def chain_inputs(location: Path) -> dict[str, str]:
    return {"s2_summer": str(location / "s2l2a_summer.tif"), "s2_autumn": str(location / "s2l2a_autumn.tif"),
            "s1_summer": str(location / "s1_summer.tif"), "labels": str(location / "landcover.tif")}


def check_prediction(path: Path) -> None:
    dataset = gdal.Open(str(path))
    assert (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (8, 8, 1)
    assert dataset.GetGeoTransform() == (501360.0, 80.0, 0.0, 5629680.0, 0.0, -80.0)
    values = dataset.ReadAsArray()
    assert np.all(np.isfinite(values))
    assert values.std() > 0
    assert Path(str(path)[:-4] + ".qml").is_file()


def test_chain_model_through_processing(processing, chain_model_file, tmp_path):
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(chain_model_file))
    output = tmp_path / "prediction.tif"
    results = processing.run(model, {**chain_inputs(LOCATION_A), "apply:prediction": str(output)})
    assert results["apply:prediction"] == str(output)
    check_prediction(output)


@pytest.mark.qgis_process
def test_chain_model_through_qgis_process(chain_model_file, tmp_path):
    output = tmp_path / "prediction.tif"
    command = ["bash", str(REPO_ROOT / "scripts" / "with_env.sh"), "qgis_process.bin", "run",
               str(chain_model_file), "--",
               *[f"{name}={value}" for name, value in chain_inputs(LOCATION_A).items()],
               f"apply:prediction={output}"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    check_prediction(output)
