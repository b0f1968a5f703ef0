"""Core tests of linear probes, label aggregation and the embedding-raster reader (no QGIS)."""

import math
from pathlib import Path

import numpy as np
import pytest
from embedding_fixtures import patch_statistics, statistics_embedding, write_embedding_raster
from osgeo import gdal

from fusedeo.errors import InputError, LayoutMismatchError, ModelFileError
from fusedeo.models import probes
from fusedeo.models.probe_workflow import LabelSource, check_probe_matches, train_probe
from fusedeo.raster.embedding_raster import (
    open_embedding_raster,
    read_embedding_values,
    valid_patch_mask,
)
from fusedeo.raster.labels import aggregate_patches, labels_from_raster, parse_class_values
from fusedeo.reporting import LoggingReporter


def test_q_score_formula():
    assert probes.q_score(0.8, 0.0) == pytest.approx(80.0)
    assert probes.q_score(0.5, 0.08) == pytest.approx(10.0)
    assert probes.q_score(-0.2, 0.02) == pytest.approx(-10.0)


def test_skill_q_uses_population_std():
    skill = probes.Skill(metric="r2", scores=np.array([0.6, 0.8]), test_count=2)
    assert skill.mean == pytest.approx(0.7)
    assert skill.std == pytest.approx(0.1)
    assert skill.q == pytest.approx(2 * 0.7 / 0.12)


def test_split_plan_standard_and_small():
    assert probes.split_plan(256)[:2] == (40, 26)
    assert probes.split_plan(256)[2] == []
    n_splits, test_count, notes = probes.split_plan(5)
    assert test_count == 2
    assert n_splits == math.comb(5, 2)
    assert any("Only 10 splits" in note for note in notes)


def _linear_case(seed: int = 0, samples: int = 300, width: int = 12, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    # Raw scale and offset like reflectance DN, so the folded standardisation matters.
    embeddings = rng.normal(2000.0, 400.0, size=(samples, width))
    weights = rng.normal(0.0, 1.0, size=width) / 400.0
    targets = (embeddings - 2000.0) @ weights + 3.0 + rng.normal(0.0, noise, size=samples)
    return embeddings, targets


def test_ridge_skill_on_linear_case():
    embeddings, targets = _linear_case()
    skill = probes.evaluate_skill(embeddings, targets, probes.REGRESSION, LoggingReporter())
    assert skill.metric == "r2"
    assert skill.n_splits == 40
    assert skill.test_count == 30
    assert skill.mean > 0.99
    assert skill.q > 50
    assert skill.oof_true.size == skill.oof_predicted.size
    assert skill.oof_true.size > 200


def test_ridge_skill_low_on_noise():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(200, 10))
    targets = rng.normal(size=200)
    skill = probes.evaluate_skill(embeddings, targets, probes.REGRESSION, LoggingReporter())
    assert skill.mean < 0.1


def test_folded_weights_equal_pipeline():
    embeddings, targets = _linear_case(seed=2)
    probe = probes.fit_probe(embeddings, targets, probes.REGRESSION)
    expected = probe.estimator.predict(embeddings)
    np.testing.assert_allclose(probe.predict(embeddings), expected, rtol=1e-9, atol=1e-9)
    assert probe.regularisation.startswith("alpha=")


def _onnx_predict(path: Path, embeddings: np.ndarray) -> np.ndarray:
    session = probes.onnx_session(str(path))
    return session.run(None, {probes.INPUT_NAME: embeddings.astype(np.float32)})[0]


def test_onnx_regression_equals_sklearn(tmp_path: Path):
    embeddings, targets = _linear_case(seed=3)
    embeddings = embeddings.astype(np.float32).astype(np.float64)
    probe = probes.fit_probe(embeddings, targets, probes.REGRESSION)
    path = tmp_path / "probe.onnx"
    probes.export_probe_onnx(
        probe,
        str(path),
        {
            probes.META_TASK_TYPE: "regression",
            probes.META_LABEL_MIN: "0",
            probes.META_LABEL_MAX: "1",
        },
    )
    output = _onnx_predict(path, embeddings)
    assert output.shape == (embeddings.shape[0], 1)
    assert output.dtype == np.float32
    np.testing.assert_allclose(
        output[:, 0], probe.estimator.predict(embeddings), rtol=1e-5, atol=1e-5
    )


def test_onnx_classification_equals_sklearn(tmp_path: Path):
    embeddings, values = _linear_case(seed=4, noise=0.5)
    embeddings = embeddings.astype(np.float32).astype(np.float64)
    targets = (values > np.median(values)).astype(np.int64)
    probe = probes.fit_probe(embeddings, targets, probes.CLASSIFICATION)
    path = tmp_path / "probe.onnx"
    probes.export_probe_onnx(
        probe,
        str(path),
        {
            probes.META_TASK_TYPE: "classification",
            probes.META_LABEL_MIN: "0",
            probes.META_LABEL_MAX: "1",
        },
    )
    output = _onnx_predict(path, embeddings)[:, 0]
    expected = probe.estimator.predict_proba(embeddings)[:, 1]
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    assert output.min() >= 0.0
    assert output.max() <= 1.0
    assert probe.regularisation.startswith("C=")


def test_classification_skill_f1(tmp_path: Path):
    embeddings, values = _linear_case(seed=5, noise=0.1)
    targets = (values > np.median(values)).astype(np.int64)
    skill = probes.evaluate_skill(embeddings, targets, probes.CLASSIFICATION, LoggingReporter())
    assert skill.metric == "f1"
    assert skill.mean > 0.85
    assert np.all((skill.oof_predicted >= 0) & (skill.oof_predicted <= 1))


def test_load_probe_rejects_corrupt_file(tmp_path: Path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf \x00\x01\x02")
    with pytest.raises(ModelFileError, match=r"broken\.onnx' is not a valid ONNX file"):
        probes.load_probe(str(path))


def test_load_probe_rejects_foreign_onnx(tmp_path: Path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(
        ModelFileError, match=r"relu\.onnx' is an ONNX model but not a FusedEO probe"
    ):
        probes.load_probe(str(path))


def test_parse_class_values():
    assert parse_class_values("11") == [11]
    assert parse_class_values(" 11, 12 ,") == [11, 12]
    with pytest.raises(InputError, match="CLASS_VALUES: 'crop' is not an integer class code"):
        parse_class_values("11,crop")
    with pytest.raises(InputError, match="contains no class code"):
        parse_class_values(" , ")


def test_aggregate_patches_mean_fraction_and_coverage():
    grid = np.array(
        [
            [1.0, 3.0, 11.0, 11.0],
            [np.nan, 5.0, 11.0, 13.0],
            [np.nan, np.nan, 13.0, 13.0],
            [np.nan, 2.0, 13.0, 13.0],
        ]
    )
    mean = aggregate_patches(grid, 2, 2, 2, 2)
    assert mean[0, 0] == pytest.approx(3.0)
    assert np.isnan(mean[1, 0])  # one of four pixels labelled: below half
    fraction = aggregate_patches(grid, 2, 2, 2, 2, class_values=[11])
    assert fraction[0, 1] == pytest.approx(0.75)
    assert fraction[1, 1] == pytest.approx(0.0)


def test_aggregate_patches_overlapping_windows():
    grid = np.arange(36, dtype=np.float64).reshape(6, 6)
    values = aggregate_patches(grid, 4, 2, 2, 2)
    assert values[0, 0] == pytest.approx(grid[0:4, 0:4].mean())
    assert values[1, 1] == pytest.approx(grid[2:6, 2:6].mean())


def test_embedding_reader_reads_contract(tmp_path: Path, worldcereal_a: Path):
    path = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif", patch_size_px=8)
    raster = open_embedding_raster(str(path))
    assert (raster.rows, raster.cols, raster.band_count) == (8, 8, 80)
    assert raster.patch_size_px == 8
    assert raster.stride_px == 8
    assert raster.grid_pixel_size == 10.0
    assert raster.grid_shape_px == (64, 64)
    assert raster.geotransform == (501360.0, 80.0, 0.0, 5629680.0, 0.0, -80.0)
    values = read_embedding_values(raster)
    assert values.shape == (8, 8, 80)
    assert valid_patch_mask(values).all()


def test_embedding_reader_rejects_plain_geotiff(worldcereal_a: Path):
    with pytest.raises(
        InputError, match="EMBEDDINGS: .*landcover.tif' is not a FusedEO embedding raster"
    ):
        open_embedding_raster(str(worldcereal_a / "landcover.tif"))


def test_cropland_fraction_labels_match_landcover(tmp_path: Path, worldcereal_a: Path):
    path = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif", patch_size_px=4)
    raster = open_embedding_raster(str(path))
    labels = labels_from_raster(
        str(worldcereal_a / "landcover.tif"), raster, [11], LoggingReporter()
    )
    landcover = gdal.Open(str(worldcereal_a / "landcover.tif")).ReadAsArray()
    windows = landcover.reshape(16, 4, 16, 4).transpose(0, 2, 1, 3).reshape(16, 16, 16)
    expected = (windows == 11).mean(axis=-1)
    np.testing.assert_allclose(labels.values, expected)
    assert labels.decisions == []
    assert labels.is_class_fraction


def test_label_raster_in_other_crs_is_reprojected(tmp_path: Path, worldcereal_a: Path):
    path = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif", patch_size_px=4)
    raster = open_embedding_raster(str(path))
    warped = tmp_path / "landcover_3857.tif"
    gdal.Warp(
        str(warped), str(worldcereal_a / "landcover.tif"), dstSRS="EPSG:3857", resampleAlg="near"
    )
    reporter = LoggingReporter()
    labels = labels_from_raster(str(warped), raster, [11], reporter)
    assert any(
        "reprojected from EPSG:3857 to EPSG:32631" in text for kind, text in reporter.messages
    )
    assert labels.labelled_count > 200
    values = labels.values[np.isfinite(labels.values)]
    assert values.min() >= 0.0
    assert values.max() <= 1.0


def test_train_probe_excludes_nodata_patches(tmp_path: Path, worldcereal_a: Path):
    features = patch_statistics(worldcereal_a, 4)
    features[0:2, :] = np.nan  # two rows of skipped patches
    embedding = write_embedding_raster(
        tmp_path / "embedding.tif", features, worldcereal_a / "s2l2a_summer.tif", 4
    )
    reporter = LoggingReporter()
    result = train_probe(
        str(embedding),
        LabelSource(raster_path=str(worldcereal_a / "landcover.tif"), class_values=[11]),
        probes.REGRESSION,
        "cropland",
        str(tmp_path / "probe.onnx"),
        str(tmp_path / "report.html"),
        reporter,
    )
    assert result.sample_count == 256 - 32
    assert (
        "info",
        "32 labelled patches were excluded because their embedding is nodata.",
    ) in reporter.messages
    assert result.skill.mean > 0.5


def test_probe_fingerprint_and_width_checks(tmp_path: Path, worldcereal_a: Path):
    path = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif", patch_size_px=8)
    raster = open_embedding_raster(str(path))
    matching = probes.ProbeInfo("p.onnx", 80, {probes.META_FINGERPRINT: raster.fingerprint})
    check_probe_matches(matching, raster)
    narrow = probes.ProbeInfo("p.onnx", 64, {probes.META_FINGERPRINT: raster.fingerprint})
    with pytest.raises(
        LayoutMismatchError, match="expects embeddings of width 64, but EMBEDDINGS .* has 80 bands"
    ):
        check_probe_matches(narrow, raster)
    other = probes.ProbeInfo("p.onnx", 80, {probes.META_FINGERPRINT: "abc123"})
    with pytest.raises(
        LayoutMismatchError,
        match=f"fingerprint abc123, but EMBEDDINGS .* has fingerprint {raster.fingerprint}",
    ):
        check_probe_matches(other, raster)


def test_fine_continuous_labels_are_averaged(tmp_path: Path, worldcereal_a: Path):
    path = statistics_embedding(worldcereal_a, tmp_path / "embedding.tif", patch_size_px=4)
    raster = open_embedding_raster(str(path))
    # A 0/1 cropland raster at 5 m, so each 10 m grid pixel averages four fine pixels.
    fine = tmp_path / "cropland_5m.tif"
    landcover = gdal.Open(str(worldcereal_a / "landcover.tif"))
    gdal.Translate(str(fine), landcover, xRes=5, yRes=5, resampleAlg="near", noData="none")
    dataset = gdal.Open(str(fine), gdal.GA_Update)
    values = dataset.ReadAsArray()
    dataset.GetRasterBand(1).WriteArray((values == 11).astype(values.dtype))
    dataset = None
    reporter = LoggingReporter()
    labels = labels_from_raster(str(fine), raster, None, reporter)
    assert any("average resampling" in text for kind, text in reporter.messages)
    expected = labels_from_raster(str(worldcereal_a / "landcover.tif"), raster, [11], reporter)
    np.testing.assert_allclose(labels.values, expected.values, atol=1e-6)
    assert labels.binary_source
