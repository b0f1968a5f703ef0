"""fusedeo:applyprobe through processing.run: a cropland-fraction probe mapped over real embeddings."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from embedding_fixtures import STATISTICS_FINGERPRINT, patch_statistics, write_embedding_raster
from osgeo import gdal, osr
from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
)
from recording_feedback import RecordingFeedback

from fusedeo.models import probes
from fusedeo.raster.embedding_raster import open_embedding_raster, read_embedding_values

PATCH_SIZE_PX = 4
# Patches left as nodata in the embedding raster the probe is applied to.
NODATA_ROWS = slice(5, 7)
NODATA_COLS = slice(3, 9)


@pytest.fixture(scope="module")
def features_a(worldcereal_a: Path) -> np.ndarray:
    """``(16, 16, 80)`` per-patch S2 statistics of location A."""
    return patch_statistics(worldcereal_a, PATCH_SIZE_PX)


@pytest.fixture(scope="module")
def cropland_probe(
    processing,
    tmp_path_factory: pytest.TempPathFactory,
    worldcereal_a: Path,
    features_a: np.ndarray,
) -> Path:
    """A cropland-fraction probe (land-cover code 11) trained on location A."""
    folder = tmp_path_factory.mktemp("cropland_probe")
    embedding = write_embedding_raster(
        folder / "embedding_a.tif", features_a, worldcereal_a / "s2l2a_summer.tif", PATCH_SIZE_PX
    )
    results = processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            "TASK": "regression",
            "TASK_NAME": "cropland_fraction",
            "OUTPUT_PROBE": str(folder / "cropland.onnx"),
            "OUTPUT_REPORT": str(folder / "cropland.html"),
        },
    )
    return Path(results["OUTPUT_PROBE"])


@pytest.fixture()
def embedding_with_nodata(tmp_path: Path, worldcereal_a: Path, features_a: np.ndarray) -> Path:
    """Location A's embedding with a block of skipped (all-NaN) patches."""
    features = features_a.copy()
    features[NODATA_ROWS, NODATA_COLS] = np.nan
    return write_embedding_raster(
        tmp_path / "embedding.tif", features, worldcereal_a / "s2l2a_summer.tif", PATCH_SIZE_PX
    )


def _assert_no_output(folder: Path, name: str = "prediction") -> None:
    assert not (folder / f"{name}.tif").exists()
    assert not (folder / f"{name}.qml").exists()
    assert list(folder.glob(".*partial*")) == []


def test_cropland_prediction_raster(
    processing,
    tmp_path: Path,
    cropland_probe: Path,
    embedding_with_nodata: Path,
    worldcereal_a: Path,
):
    output = tmp_path / "prediction.tif"
    results = processing.run(
        "fusedeo:applyprobe",
        {
            "EMBEDDINGS": str(embedding_with_nodata),
            "PROBE": str(cropland_probe),
            "OUTPUT": str(output),
        },
    )
    assert results["OUTPUT"] == str(output)

    embedding = gdal.Open(str(embedding_with_nodata))
    prediction = gdal.Open(str(output))
    prediction_srs = osr.SpatialReference(wkt=prediction.GetProjection())
    assert prediction_srs.IsSame(osr.SpatialReference(wkt=embedding.GetProjection()))
    assert prediction_srs.GetAuthorityCode(None) == "32631"
    assert prediction.GetGeoTransform() == embedding.GetGeoTransform()
    assert (prediction.RasterXSize, prediction.RasterYSize) == (16, 16)
    assert prediction.RasterCount == 1
    band = prediction.GetRasterBand(1)
    assert gdal.GetDataTypeName(band.DataType) == "Float32"
    assert math.isnan(band.GetNoDataValue())
    assert band.GetDescription() == "cropland_fraction"

    metadata = prediction.GetMetadata()
    assert metadata["FUSEDEO_KIND"] == "prediction"
    assert metadata["FUSEDEO_EMBEDDING_FINGERPRINT"] == STATISTICS_FINGERPRINT
    assert metadata["FUSEDEO_PROBE_TASK_NAME"] == "cropland_fraction"
    assert metadata["FUSEDEO_PROBE_TASK_TYPE"] == "regression"
    assert json.loads(metadata["FUSEDEO_PROBE_LABEL_RANGE"]) == [0.0, 1.0]
    assert metadata["FUSEDEO_NODATA_PATCHES"] == "12"
    skill = json.loads(metadata["FUSEDEO_PROBE_SKILL"])
    assert skill["metric"] == "r2"
    assert skill["splits"] == "40"
    provenance = json.loads(metadata["FUSEDEO_PROVENANCE"])
    assert provenance["embeddings"] == str(embedding_with_nodata)
    assert provenance["probe"] == str(cropland_probe)
    assert provenance["probe_sha256"] == probes.probe_sha256(str(cropland_probe))

    values = band.ReadAsArray()
    nodata = np.zeros(values.shape, dtype=bool)
    nodata[NODATA_ROWS, NODATA_COLS] = True
    assert np.isnan(values[nodata]).all()
    assert np.isfinite(values[~nodata]).all()
    assert values[~nodata].std() > 0.2

    # The map follows the real cropland fraction it was trained on.
    landcover = gdal.Open(str(worldcereal_a / "landcover.tif")).ReadAsArray()
    fraction = (
        landcover.reshape(16, 4, 16, 4).transpose(0, 2, 1, 3).reshape(16, 16, 16) == 11
    ).mean(axis=-1)
    assert np.corrcoef(values[~nodata], fraction[~nodata])[0, 1] > 0.9

    # Pixel values are the probe's onnxruntime output for each embedding.
    embeddings = read_embedding_values(open_embedding_raster(str(embedding_with_nodata)))
    session = probes.onnx_session(str(cropland_probe))
    expected = session.run(None, {"embedding": embeddings[~nodata]})[0][:, 0]
    np.testing.assert_allclose(values[~nodata], expected, rtol=1e-6, atol=1e-6)


def test_sidecar_style_applies_on_load(
    processing, tmp_path: Path, cropland_probe: Path, embedding_with_nodata: Path
):
    output = tmp_path / "prediction.tif"
    processing.run(
        "fusedeo:applyprobe",
        {
            "EMBEDDINGS": str(embedding_with_nodata),
            "PROBE": str(cropland_probe),
            "OUTPUT": str(output),
        },
    )
    style = tmp_path / "prediction.qml"
    assert style.is_file()
    layer = QgsRasterLayer(str(output), "prediction")
    assert layer.isValid()
    renderer = layer.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    shader = renderer.shader().rasterShaderFunction()
    assert shader.minimumValue() == pytest.approx(0.0)
    assert shader.maximumValue() == pytest.approx(1.0)
    assert len(shader.colorRampItemList()) == 5


def test_processing_styles_loaded_layer(
    processing, tmp_path: Path, cropland_probe: Path, embedding_with_nodata: Path
):
    output = str(tmp_path / "prediction.tif")
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    context.addLayerToLoadOnCompletion(
        output, QgsProcessingContext.LayerDetails("Predictions", project, "OUTPUT")
    )
    feedback = RecordingFeedback()
    processing.run(
        "fusedeo:applyprobe",
        {"EMBEDDINGS": str(embedding_with_nodata), "PROBE": str(cropland_probe), "OUTPUT": output},
        context=context,
        feedback=feedback,
    )
    details = context.layerToLoadOnCompletionDetails(output)
    assert details.name == "cropland_fraction"
    post_processor = details.postProcessor()
    assert post_processor is not None

    # Load the file without its default style, as a layer Processing adds would be before styling.
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False
    layer = QgsRasterLayer(output, "prediction", "gdal", options)
    assert layer.renderer().type() != "singlebandpseudocolor"
    post_processor.postProcessLayer(layer, context, feedback)
    assert layer.renderer().type() == "singlebandpseudocolor"


def test_apply_to_other_location(
    processing, tmp_path: Path, cropland_probe: Path, worldcereal_b: Path
):
    features = patch_statistics(worldcereal_b, PATCH_SIZE_PX)
    embedding = write_embedding_raster(
        tmp_path / "embedding_b.tif", features, worldcereal_b / "s2l2a_summer.tif", PATCH_SIZE_PX
    )
    output = tmp_path / "prediction_b.tif"
    processing.run(
        "fusedeo:applyprobe",
        {"EMBEDDINGS": str(embedding), "PROBE": str(cropland_probe), "OUTPUT": str(output)},
    )
    prediction = gdal.Open(str(output))
    assert prediction.GetGeoTransform() == (574680.0, 40.0, 0.0, 5622440.0, 0.0, -40.0)
    values = prediction.GetRasterBand(1).ReadAsArray()
    assert np.isfinite(values).all()
    assert values.std() > 0.1


def test_width_mismatch_rejected(
    processing, tmp_path: Path, cropland_probe: Path, worldcereal_a: Path, features_a: np.ndarray
):
    narrow = write_embedding_raster(
        tmp_path / "narrow.tif",
        features_a[:, :, :40],
        worldcereal_a / "s2l2a_summer.tif",
        PATCH_SIZE_PX,
    )
    with pytest.raises(
        QgsProcessingException,
        match=r"PROBE '.*cropland\.onnx' expects embeddings of width 80, but EMBEDDINGS '.*narrow\.tif' has 40 bands",
    ):
        processing.run(
            "fusedeo:applyprobe",
            {
                "EMBEDDINGS": str(narrow),
                "PROBE": str(cropland_probe),
                "OUTPUT": str(tmp_path / "prediction.tif"),
            },
        )
    _assert_no_output(tmp_path)


def test_fingerprint_mismatch_rejected(
    processing, tmp_path: Path, cropland_probe: Path, worldcereal_a: Path, features_a: np.ndarray
):
    other = write_embedding_raster(
        tmp_path / "other.tif",
        features_a,
        worldcereal_a / "s2l2a_summer.tif",
        PATCH_SIZE_PX,
        fingerprint="0badc0ffee",
    )
    with pytest.raises(
        QgsProcessingException,
        match=f"fingerprint {STATISTICS_FINGERPRINT}, but EMBEDDINGS '.*other\\.tif' has fingerprint 0badc0ffee",
    ):
        processing.run(
            "fusedeo:applyprobe",
            {
                "EMBEDDINGS": str(other),
                "PROBE": str(cropland_probe),
                "OUTPUT": str(tmp_path / "prediction.tif"),
            },
        )
    _assert_no_output(tmp_path)


def test_corrupt_probe_rejected(
    processing, tmp_path: Path, cropland_probe: Path, embedding_with_nodata: Path
):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(cropland_probe.read_bytes()[: cropland_probe.stat().st_size // 2])
    with pytest.raises(
        QgsProcessingException, match=r"PROBE: '.*corrupt\.onnx' is not a valid ONNX file"
    ):
        processing.run(
            "fusedeo:applyprobe",
            {
                "EMBEDDINGS": str(embedding_with_nodata),
                "PROBE": str(corrupt),
                "OUTPUT": str(tmp_path / "prediction.tif"),
            },
        )
    _assert_no_output(tmp_path)


def test_cancel_leaves_no_output(
    processing, tmp_path: Path, cropland_probe: Path, worldcereal_a: Path, features_a: np.ndarray
):
    # 160 patch rows are three blocks of 64, so the run is cancelled after its first block.
    tall = np.tile(features_a, (10, 1, 1))
    embedding = write_embedding_raster(
        tmp_path / "tall.tif", tall, worldcereal_a / "s2l2a_summer.tif", PATCH_SIZE_PX
    )
    feedback = RecordingFeedback(cancel_after_percent=0.0)
    results = processing.run(
        "fusedeo:applyprobe",
        {
            "EMBEDDINGS": str(embedding),
            "PROBE": str(cropland_probe),
            "OUTPUT": str(tmp_path / "prediction.tif"),
        },
        feedback=feedback,
    )
    assert results == {}
    assert feedback.isCanceled()
    assert any("cancelled" in warning for warning in feedback.warnings)
    _assert_no_output(tmp_path)


def test_classification_probability_map(
    processing, tmp_path: Path, embedding_with_nodata: Path, worldcereal_a: Path
):
    probe = tmp_path / "mostly_cropland.onnx"
    processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_with_nodata),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            "TASK": "classification",
            "TASK_NAME": "mostly_cropland",
            "OUTPUT_PROBE": str(probe),
            "OUTPUT_REPORT": str(tmp_path / "mostly_cropland.html"),
        },
    )
    output = tmp_path / "probability.tif"
    processing.run(
        "fusedeo:applyprobe",
        {"EMBEDDINGS": str(embedding_with_nodata), "PROBE": str(probe), "OUTPUT": str(output)},
    )
    prediction = gdal.Open(str(output))
    assert prediction.GetMetadata()["FUSEDEO_PROBE_TASK_TYPE"] == "classification"
    assert prediction.GetRasterBand(1).GetDescription() == "mostly_cropland"
    values = prediction.GetRasterBand(1).ReadAsArray()
    valid = np.isfinite(values)
    assert valid.sum() == 256 - 12
    assert values[valid].min() >= 0.0
    assert values[valid].max() <= 1.0
    assert (values[valid] < 0.1).any()
    assert (values[valid] > 0.9).any()


def _probe_chain_model():  # noqa: ANN202 (QgsProcessingModelAlgorithm)
    """Build the graphical model trainprobe -> applyprobe, as a user would in the modeler."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("probe chain", "FusedEO tests")
    for name in ("embeddings", "labels"):
        model.addModelParameter(
            QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name)
        )
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    from_input = QgsProcessingModelChildParameterSource.fromModelParameter

    train = QgsProcessingModelChildAlgorithm("fusedeo:trainprobe")
    train.setChildId("train")
    train.addParameterSources("EMBEDDINGS", [from_input("embeddings")])
    train.addParameterSources("LABELS_RASTER", [from_input("labels")])
    train.addParameterSources("CLASS_VALUES", [static("11")])
    train.addParameterSources("TASK", [static("regression")])
    train.addParameterSources("TASK_NAME", [static("cropland_fraction")])
    train.addParameterSources("MIN_SAMPLES", [static(10)])
    model.addChildAlgorithm(train)

    apply = QgsProcessingModelChildAlgorithm("fusedeo:applyprobe")
    apply.setChildId("apply")
    apply.addParameterSources("EMBEDDINGS", [from_input("embeddings")])
    apply.addParameterSources(
        "PROBE", [QgsProcessingModelChildParameterSource.fromChildOutput("train", "OUTPUT_PROBE")]
    )
    output = QgsProcessingModelOutput("prediction")
    output.setChildId("apply")
    output.setChildOutputName("OUTPUT")
    apply.setModelOutputs({"prediction": output})
    model.addChildAlgorithm(apply)
    return model


def test_train_apply_graphical_model(
    processing, tmp_path: Path, embedding_with_nodata: Path, worldcereal_a: Path
):
    model = _probe_chain_model()
    output = tmp_path / "model_prediction.tif"
    results = processing.run(
        model,
        {
            "embeddings": str(embedding_with_nodata),
            "labels": str(worldcereal_a / "landcover.tif"),
            "apply:prediction": str(output),
        },
    )
    assert results["apply:prediction"] == str(output)
    prediction = gdal.Open(str(output))
    assert prediction.GetRasterBand(1).GetDescription() == "cropland_fraction"
    values = prediction.GetRasterBand(1).ReadAsArray()
    assert np.isfinite(values).sum() == 256 - 12
    assert (tmp_path / "model_prediction.qml").is_file()
