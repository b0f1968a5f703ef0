"""fusedeo:trainprobe through processing.run on real WorldCereal pixels and labels."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from embedding_fixtures import STATISTICS_FINGERPRINT, statistics_embedding
from osgeo import gdal, ogr, osr
from qgis.core import QgsProcessingException
from recording_feedback import RecordingFeedback

from fusedeo import __version__

PATCH_SIZE_PX = 4


@pytest.fixture(scope="module")
def embedding_a(tmp_path_factory: pytest.TempPathFactory, worldcereal_a: Path) -> Path:
    """Per-patch S2 statistics of location A, 16 x 16 patches of 4 px, 80 bands."""
    folder = tmp_path_factory.mktemp("embedding_a")
    return statistics_embedding(
        worldcereal_a, folder / "embedding_a.tif", patch_size_px=PATCH_SIZE_PX
    )


def _cropland_fraction(location: Path) -> np.ndarray:
    """``(16, 16)`` fraction of land-cover code 11 per 4 x 4 px patch, from the real label raster."""
    landcover = gdal.Open(str(location / "landcover.tif")).ReadAsArray()
    windows = landcover.reshape(16, 4, 16, 4).transpose(0, 2, 1, 3).reshape(16, 16, 16)
    return (windows == 11).mean(axis=-1)


def _metadata(path: Path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


def _outputs(tmp_path: Path) -> dict[str, str]:
    return {
        "OUTPUT_PROBE": str(tmp_path / "probe.onnx"),
        "OUTPUT_REPORT": str(tmp_path / "report.html"),
    }


def _assert_no_outputs(tmp_path: Path) -> None:
    assert not (tmp_path / "probe.onnx").exists()
    assert not (tmp_path / "report.html").exists()
    assert list(tmp_path.glob(".*partial*")) == []


def _write_vector(
    path: Path, epsg: int, geometries_utm: list[ogr.Geometry], values: list[float]
) -> Path:
    """Write geometries given in EPSG:32631 to a GeoPackage in ``epsg`` with a field ``label``."""
    source = osr.SpatialReference()
    source.ImportFromEPSG(32631)
    target = osr.SpatialReference()
    target.ImportFromEPSG(epsg)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(source, target)
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    geometry_type = geometries_utm[0].GetGeometryType()
    layer = dataset.CreateLayer("labels", srs=target, geom_type=geometry_type)
    layer.CreateField(ogr.FieldDefn("label", ogr.OFTReal))
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for geometry, value in zip(geometries_utm, values, strict=True):
        feature = ogr.Feature(layer.GetLayerDefn())
        moved = geometry.Clone()
        moved.Transform(transform)
        feature.SetGeometry(moved)
        feature.SetField("label", value)
        feature.SetField("name", f"feature {value}")
        layer.CreateFeature(feature)
    dataset = None
    return path


def _point(x: float, y: float) -> ogr.Geometry:
    point = ogr.Geometry(ogr.wkbPoint)
    point.AddPoint_2D(x, y)
    return point


def _square(left: float, top: float, size: float) -> ogr.Geometry:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in (
        (left, top),
        (left + size, top),
        (left + size, top - size),
        (left, top - size),
        (left, top),
    ):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


# Location A's grid: origin (501360, 5629680), 10 m pixels, 4 px (40 m) patches.
ORIGIN_X, ORIGIN_Y, CELL_M = 501360.0, 5629680.0, 40.0


def test_cropland_fraction_probe(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    feedback = RecordingFeedback()
    results = processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            "TASK": "regression",
            "TASK_NAME": "cropland_fraction",
            **_outputs(tmp_path),
        },
        feedback=feedback,
    )
    assert results["OUTPUT_PROBE"] == str(tmp_path / "probe.onnx")
    assert results["OUTPUT_REPORT"] == str(tmp_path / "report.html")

    metadata = _metadata(tmp_path / "probe.onnx")
    assert metadata["fusedeo_kind"] == "probe"
    assert metadata["task_name"] == "cropland_fraction"
    assert metadata["task_type"] == "regression"
    assert metadata["label_name"] == "fraction of classes 11"
    assert metadata["label_unit"] == "fraction (0-1)"
    assert float(metadata["label_min"]) == 0.0
    assert float(metadata["label_max"]) == 1.0
    assert metadata["skill_metric"] == "r2"
    assert metadata["skill_splits"] == "40"
    assert metadata["sample_count"] == "256"
    assert metadata["input_width"] == "80"
    assert metadata["embedding_fingerprint"] == STATISTICS_FINGERPRINT
    assert metadata["fusedeo_version"] == __version__
    mean, std = float(metadata["skill_mean"]), float(metadata["skill_std"])
    assert mean > 0.6
    assert float(metadata["skill_q"]) == pytest.approx(2 * mean / (0.02 + std))

    model = onnx.load(str(tmp_path / "probe.onnx"))
    assert [value.name for value in model.graph.input] == ["embedding"]
    assert [value.name for value in model.graph.output] == ["prediction"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 80

    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in report
    assert "cropland_fraction" in report
    assert f"{float(metadata['skill_q']):.3f}" in report
    assert any("256 samples were used." in info for info in feedback.infos)
    assert "256 samples were used." in json.loads(metadata["decisions"])


def test_probe_onnx_matches_sklearn_refit(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    from fusedeo.models import probes
    from fusedeo.raster.embedding_raster import open_embedding_raster, read_embedding_values

    processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            "TASK": "regression",
            **_outputs(tmp_path),
        },
    )
    features = (
        read_embedding_values(open_embedding_raster(str(embedding_a)))
        .reshape(-1, 80)
        .astype(np.float64)
    )
    targets = _cropland_fraction(worldcereal_a).reshape(-1)
    reference = probes.fit_probe(features, targets, probes.REGRESSION)
    session = probes.onnx_session(str(tmp_path / "probe.onnx"))
    output = session.run(None, {"embedding": features.astype(np.float32)})[0][:, 0]
    np.testing.assert_allclose(output, reference.estimator.predict(features), rtol=1e-5, atol=1e-5)


def test_classification_probe(processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path):
    processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            "TASK": "classification",
            "TASK_NAME": "mostly_cropland",
            **_outputs(tmp_path),
        },
    )
    metadata = _metadata(tmp_path / "probe.onnx")
    assert metadata["task_type"] == "classification"
    assert metadata["label_unit"] == "probability of class 1"
    assert (float(metadata["label_min"]), float(metadata["label_max"])) == (0.0, 1.0)
    assert metadata["skill_metric"] == "f1"
    assert float(metadata["skill_mean"]) > 0.7
    assert metadata["regularisation"].startswith("C=")
    decisions = json.loads(metadata["decisions"])
    assert any(
        text.startswith("A patch is class 1 when its label is at least 0.5") for text in decisions
    )
    assert [node.op_type for node in onnx.load(str(tmp_path / "probe.onnx")).graph.node][
        -2
    ] == "Sigmoid"


def test_point_labels_in_other_crs(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    fraction = _cropland_fraction(worldcereal_a)
    points, values = [], []
    for row in range(0, 16, 2):
        for col in range(16):
            centre_x = ORIGIN_X + (col + 0.5) * CELL_M
            centre_y = ORIGIN_Y - (row + 0.5) * CELL_M
            points.append(_point(centre_x, centre_y))
            values.append(float(fraction[row, col]))
    # A second point in patch (0, 0) is averaged with the first.
    points.append(_point(ORIGIN_X + 5.0, ORIGIN_Y - 5.0))
    values.append(float(fraction[0, 0]) + 0.5)
    vector = _write_vector(tmp_path / "points.gpkg", 4326, points, values)

    feedback = RecordingFeedback()
    processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_VECTOR": str(vector),
            "FIELD": "label",
            "TASK": "regression",
            "TASK_NAME": "cropland_points",
            **_outputs(tmp_path),
        },
        feedback=feedback,
    )
    metadata = _metadata(tmp_path / "probe.onnx")
    assert metadata["sample_count"] == str(8 * 16)
    assert metadata["label_name"] == "label"
    decisions = json.loads(metadata["decisions"])
    assert any("reprojected from EPSG:4326 to EPSG:32631" in text for text in decisions)
    assert any("1 patch(es) hold several points" in text for text in decisions)
    assert any("reprojected from EPSG:4326" in warning for warning in feedback.warnings)
    assert float(metadata["label_max"]) == pytest.approx(
        max(values[:-1] + [float(fraction[0, 0]) + 0.25])
    )


def test_polygon_labels_in_other_crs(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    fraction = _cropland_fraction(worldcereal_a)
    polygons, values = [], []
    # Sixteen squares of 2 x 2 patches, two patches apart: 64 covered patches.
    for row in range(0, 16, 4):
        for col in range(0, 16, 4):
            polygons.append(_square(ORIGIN_X + col * CELL_M, ORIGIN_Y - row * CELL_M, 2 * CELL_M))
            values.append(float(fraction[row : row + 2, col : col + 2].mean()))
    vector = _write_vector(tmp_path / "polygons.gpkg", 3857, polygons, values)

    processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_VECTOR": str(vector),
            "FIELD": "label",
            "TASK": "regression",
            **_outputs(tmp_path),
        },
    )
    metadata = _metadata(tmp_path / "probe.onnx")
    assert metadata["sample_count"] == str(len(polygons) * 4)
    assert any(
        "reprojected from EPSG:3857 to EPSG:32631" in text
        for text in json.loads(metadata["decisions"])
    )
    assert float(metadata["label_min"]) == pytest.approx(min(values))
    assert float(metadata["label_max"]) == pytest.approx(max(values))


def test_both_label_inputs_rejected(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    vector = _write_vector(
        tmp_path / "points.gpkg", 32631, [_point(ORIGIN_X + 20, ORIGIN_Y - 20)], [1.0]
    )
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
        "CLASS_VALUES": "11",
        "LABELS_VECTOR": str(vector),
        "FIELD": "label",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException, match="LABELS_RASTER and LABELS_VECTOR are both set"
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_no_label_input_rejected(processing, tmp_path: Path, embedding_a: Path):
    with pytest.raises(
        QgsProcessingException, match="Neither LABELS_RASTER nor LABELS_VECTOR is set"
    ):
        processing.run("fusedeo:trainprobe", {"EMBEDDINGS": str(embedding_a), **_outputs(tmp_path)})
    _assert_no_outputs(tmp_path)


def test_non_binary_classification_raster(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path
):
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
        "TASK": "classification",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException,
        match=r"TASK=classification needs labels 0 and 1, but label raster LABELS_RASTER .*landcover.tif' "
        r"contains 11, 13, 60, 99",
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_non_binary_classification_field(processing, tmp_path: Path, embedding_a: Path):
    points = [_point(ORIGIN_X + 20 + 40 * i, ORIGIN_Y - 20) for i in range(12)]
    vector = _write_vector(
        tmp_path / "points.gpkg", 32631, points, [float(i % 3) for i in range(12)]
    )
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_VECTOR": str(vector),
        "FIELD": "label",
        "TASK": "classification",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException, match=r"field 'label' of LABELS_VECTOR .*points.gpkg.* contains 2"
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_too_few_samples(processing, tmp_path: Path, embedding_a: Path):
    points = [_point(ORIGIN_X + 20 + 40 * i, ORIGIN_Y - 20) for i in range(6)]
    vector = _write_vector(tmp_path / "points.gpkg", 32631, points, [0.1 * i for i in range(6)])
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_VECTOR": str(vector),
        "FIELD": "label",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException,
        match="Only 6 labelled patches with valid embeddings were found; MIN_SAMPLES is 10",
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_text_field_rejected(processing, tmp_path: Path, embedding_a: Path):
    vector = _write_vector(
        tmp_path / "points.gpkg", 32631, [_point(ORIGIN_X + 20, ORIGIN_Y - 20)], [1.0]
    )
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_VECTOR": str(vector),
        "FIELD": "name",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException, match="FIELD: 'name' of LABELS_VECTOR .* is of type String"
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_class_values_with_vector_rejected(processing, tmp_path: Path, embedding_a: Path):
    vector = _write_vector(
        tmp_path / "points.gpkg", 32631, [_point(ORIGIN_X + 20, ORIGIN_Y - 20)], [1.0]
    )
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_VECTOR": str(vector),
        "FIELD": "label",
        "CLASS_VALUES": "11",
        **_outputs(tmp_path),
    }
    with pytest.raises(QgsProcessingException, match="CLASS_VALUES applies to LABELS_RASTER only"):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_labels_outside_embeddings_rejected(
    processing, tmp_path: Path, embedding_a: Path, worldcereal_b: Path
):
    parameters = {
        "EMBEDDINGS": str(embedding_a),
        "LABELS_RASTER": str(worldcereal_b / "landcover.tif"),
        "CLASS_VALUES": "11",
        **_outputs(tmp_path),
    }
    with pytest.raises(
        QgsProcessingException,
        match=r"LABELS_RASTER: no patch of the embedding raster has a label from '.*0000280849BAC91C",
    ):
        processing.run("fusedeo:trainprobe", parameters)
    _assert_no_outputs(tmp_path)


def test_cancel_leaves_no_probe(processing, tmp_path: Path, embedding_a: Path, worldcereal_a: Path):
    feedback = RecordingFeedback(cancel_after_percent=10.0)
    results = processing.run(
        "fusedeo:trainprobe",
        {
            "EMBEDDINGS": str(embedding_a),
            "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
            "CLASS_VALUES": "11",
            **_outputs(tmp_path),
        },
        feedback=feedback,
    )
    assert results == {}
    assert any("cancelled during cross-validation" in warning for warning in feedback.warnings)
    _assert_no_outputs(tmp_path)


def test_class_codes_without_class_values_warned(processing, tmp_path: Path, worldcereal_a: Path):
    """A land-cover raster without CLASS_VALUES trains on mean codes, with a warning about it."""
    from recording_feedback import RecordingFeedback

    from embedding_fixtures import statistics_embedding

    embedding = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif")
    feedback = RecordingFeedback()
    processing.run("fusedeo:trainprobe", {
        "EMBEDDINGS": str(embedding), "LABELS_RASTER": str(worldcereal_a / "landcover.tif"),
        "TASK": "regression", "OUTPUT_PROBE": str(tmp_path / "p.onnx"),
        "OUTPUT_REPORT": str(tmp_path / "r.html")}, feedback=feedback)
    assert any("looks like class codes, but no CLASS_VALUES were given" in message
               for message in feedback.warnings)
