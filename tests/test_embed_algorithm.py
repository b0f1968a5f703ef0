"""fusedeo:embed through processing.run on the real WorldCereal layers."""

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import LOCATION_A, LOCATION_B, REPO_ROOT, season_layers

PATCH_PX = 16


def run_embed(processing, output: Path, **parameters):  # noqa: ANN001, ANN201
    values = {"PATCH_SIZE": PATCH_PX, "STRIDE": PATCH_PX, "DEVICE": "cpu", "OUTPUT": str(output)}
    values.update(parameters)
    return processing.run("fusedeo:embed", values)


def read_raster(path: Path) -> tuple[gdal.Dataset, np.ndarray]:
    dataset = gdal.Open(str(path))
    return dataset, dataset.ReadAsArray()


def folder_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture(scope="module")
def embedded_a(processing, tmp_path_factory):  # noqa: ANN001, ANN201
    """Embedding of location A (four seasons of S1 and S2) with table and model."""
    folder = tmp_path_factory.mktemp("embed_a")
    result = run_embed(
        processing, folder / "embedding.tif", **season_layers(LOCATION_A),
        OUTPUT_TABLE=str(folder / "embedding.csv"),
        OUTPUT_EMBEDDING_MODEL=str(folder / "space.fusedeo"),
    )
    return folder, result


class TestEmbedOutput:
    def test_outputs_returned(self, embedded_a):
        folder, result = embedded_a
        assert result["OUTPUT"] == str(folder / "embedding.tif")
        assert result["OUTPUT_TABLE"] == str(folder / "embedding.csv")
        assert result["OUTPUT_EMBEDDING_MODEL"] == str(folder / "space.fusedeo")
        assert folder_files(folder) == ["embedding.csv", "embedding.tif", "space.fusedeo"]

    def test_grid_is_exact(self, embedded_a):
        folder, _ = embedded_a
        dataset = gdal.Open(str(folder / "embedding.tif"))
        source = gdal.Open(str(LOCATION_A / "s2l2a_spring.tif"))
        srs = osr.SpatialReference(wkt=dataset.GetProjection())
        assert srs.GetAuthorityCode(None) == "32631"
        left, step, _, top, _, _ = source.GetGeoTransform()
        # Output pixel (0, 0) covers input pixels 0..15 of the 10 m grid.
        assert dataset.GetGeoTransform() == (left, step * PATCH_PX, 0.0, top, 0.0, -step * PATCH_PX)
        assert (dataset.RasterXSize, dataset.RasterYSize) == (64 // PATCH_PX, 64 // PATCH_PX)

    def test_bands_dtype_nodata(self, embedded_a):
        folder, _ = embedded_a
        dataset, values = read_raster(folder / "embedding.tif")
        # PCA on 16 valid patches has at most 15 components.
        assert dataset.RasterCount == 15
        band = dataset.GetRasterBand(1)
        assert gdal.GetDataTypeName(band.DataType) == "Float32"
        assert math.isnan(band.GetNoDataValue())
        assert band.GetDescription() == "embedding_0000"
        assert dataset.GetRasterBand(15).GetDescription() == "embedding_0014"
        assert np.all(np.isfinite(values))
        assert values.std(axis=(1, 2)).min() > 0

    def test_provenance_metadata(self, embedded_a):
        folder, _ = embedded_a
        metadata = gdal.Open(str(folder / "embedding.tif")).GetMetadata()
        assert metadata["FUSEDEO_KIND"] == "embedding"
        assert metadata["FUSEDEO_PATCH_SIZE_PX"] == str(PATCH_PX)
        assert metadata["FUSEDEO_STRIDE_PX"] == str(PATCH_PX)
        assert float(metadata["FUSEDEO_GRID_PIXEL_SIZE"]) == 10.0
        provenance = json.loads(metadata["FUSEDEO_PROVENANCE"])
        assert provenance["encoders"][0]["name"] == "mosaiks"
        assert provenance["encoders"][0]["settings"]["seed"] == 10012023
        assert provenance["layout"] == [{"name": "mosaiks", "channels": 4096, "seasons": 1}]
        assert provenance["compressor"]["kind"] == "pca"
        assert len(provenance["compressor"]["sha256"]) == 64
        assert provenance["embedding_fingerprint"] == metadata["FUSEDEO_EMBEDDING_FINGERPRINT"]
        assert provenance["seasons"] == ["spring", "summer", "autumn", "winter"]
        assert provenance["patches"] == {"total": 16, "valid": 16, "skipped": 0}
        assert provenance["device"] == "cpu"
        spring = next(entry for entry in provenance["inputs"] if entry["parameter"] == "S2L2A_SPRING")
        assert spring["filled_bands"] == ["B01", "B09"]
        assert spring["offset_dn"] == 0.0
        assert any("no product metadata" in sentence for sentence in spring["decisions"])

    def test_table_matches_raster(self, embedded_a):
        folder, _ = embedded_a
        _, values = read_raster(folder / "embedding.tif")
        with open(folder / "embedding.csv", newline="") as file:
            rows = list(csv.reader(file))
        assert rows[0] == ["id", *[str(index) for index in range(15)]]
        assert len(rows) == 17
        by_id = {row[0]: np.array(row[1:], dtype=np.float64) for row in rows[1:]}
        np.testing.assert_allclose(by_id["2_3"], values[:, 2, 3], rtol=1e-5, atol=1e-4)

    def test_rerun_is_identical(self, processing, embedded_a, tmp_path):
        folder, _ = embedded_a
        run_embed(processing, tmp_path / "again.tif", **season_layers(LOCATION_A))
        _, first = read_raster(folder / "embedding.tif")
        _, second = read_raster(tmp_path / "again.tif")
        np.testing.assert_array_equal(first, second)


class TestEmbeddingModelReuse:
    def test_other_location_same_space(self, processing, embedded_a, tmp_path):
        folder, _ = embedded_a
        run_embed(processing, tmp_path / "b.tif", **season_layers(LOCATION_B),
                  EMBEDDING_MODEL=str(folder / "space.fusedeo"))
        metadata_a = gdal.Open(str(folder / "embedding.tif")).GetMetadata()
        dataset_b, values_b = read_raster(tmp_path / "b.tif")
        metadata_b = dataset_b.GetMetadata()
        assert metadata_b["FUSEDEO_EMBEDDING_FINGERPRINT"] == metadata_a["FUSEDEO_EMBEDDING_FINGERPRINT"]
        assert dataset_b.RasterCount == 15
        assert np.all(np.isfinite(values_b))
        _, values_a = read_raster(folder / "embedding.tif")
        assert not np.allclose(values_a, values_b)

    def test_reuse_reproduces_same_area(self, processing, embedded_a, tmp_path):
        folder, _ = embedded_a
        run_embed(processing, tmp_path / "a2.tif", **season_layers(LOCATION_A),
                  EMBEDDING_MODEL=str(folder / "space.fusedeo"))
        _, first = read_raster(folder / "embedding.tif")
        _, second = read_raster(tmp_path / "a2.tif")
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-4)


class TestMissingSeasonsAndNodata:
    def test_single_season_s2_only(self, processing, tmp_path):
        layers = {"S2L2A_SUMMER": str(LOCATION_A / "s2l2a_summer.tif")}
        run_embed(processing, tmp_path / "summer.tif", **layers, DIMENSIONS=4)
        dataset, values = read_raster(tmp_path / "summer.tif")
        provenance = json.loads(dataset.GetMetadata()["FUSEDEO_PROVENANCE"])
        assert provenance["seasons"] == ["summer"]
        assert provenance["encoders"][0]["settings"]["channels"][0] == "s2l2a:B02"
        assert dataset.RasterCount == 4
        assert np.all(np.isfinite(values))

    def test_patches_below_valid_fraction_are_nodata(self, processing, tmp_path):
        source = gdal.Open(str(LOCATION_A / "s2l2a_summer.tif"))
        data = source.ReadAsArray()
        data[:, :16, :16] = 0  # nodata over the first patch
        holey = tmp_path / "holey.tif"
        copy = gdal.GetDriverByName("GTiff").CreateCopy(str(holey), source)
        copy.WriteArray(data)
        copy = None
        run_embed(processing, tmp_path / "out.tif", S2L2A_SUMMER=str(holey), DIMENSIONS=4)
        dataset, values = read_raster(tmp_path / "out.tif")
        assert np.all(np.isnan(values[:, 0, 0]))
        assert np.all(np.isfinite(values[:, 1:, :]))
        provenance = json.loads(dataset.GetMetadata()["FUSEDEO_PROVENANCE"])
        assert provenance["patches"] == {"total": 16, "valid": 15, "skipped": 1}


class CancelAfter:
    """Feedback that cancels the run once progress passes a threshold."""

    def __init__(self, threshold: float) -> None:
        from qgis.core import QgsProcessingFeedback

        self.feedback = QgsProcessingFeedback()
        self.feedback.progressChanged.connect(self._check)
        self.threshold = threshold

    def _check(self, value: float) -> None:
        if value > self.threshold:
            self.feedback.cancel()


def test_cancel_leaves_no_output(processing, tmp_path):
    cancel = CancelAfter(30.0)
    result = processing.run(
        "fusedeo:embed",
        {**season_layers(LOCATION_A), "PATCH_SIZE": 8, "STRIDE": 8, "DEVICE": "cpu",
         "OUTPUT": str(tmp_path / "cancelled.tif"), "OUTPUT_TABLE": str(tmp_path / "cancelled.csv")},
        feedback=cancel.feedback,
    )
    assert cancel.feedback.isCanceled()
    assert "OUTPUT" not in result
    assert folder_files(tmp_path) == []


class TestBadInput:
    def expect_error(self, processing, tmp_path, match, **parameters):  # noqa: ANN001
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match=match):
            run_embed(processing, tmp_path / "out.tif", **parameters)
        assert folder_files(tmp_path) == [name for name in folder_files(tmp_path) if not name.startswith("out")]
        assert not any(name.startswith((".out", "out")) for name in folder_files(tmp_path))

    def test_disjoint_extents(self, processing, tmp_path):
        self.expect_error(
            processing, tmp_path, r"S1_SUMMER \('s1_summer'\) does not overlap S2L2A_SUMMER",
            S2L2A_SUMMER=str(LOCATION_A / "s2l2a_summer.tif"), S1_SUMMER=str(LOCATION_B / "s1_summer.tif"))

    def test_no_season_given(self, processing, tmp_path):
        self.expect_error(processing, tmp_path, "No season layer is set: give at least one of S2L2A_SPRING")

    def test_seven_bands_without_descriptions(self, processing, tmp_path):
        seven = tmp_path / "seven.tif"
        gdal.Translate(str(seven), str(LOCATION_A / "s2l2a_summer.tif"), bandList=[1, 2, 3, 4, 5, 6, 7])
        dataset = gdal.Open(str(seven), gdal.GA_Update)
        for index in range(1, 8):
            dataset.GetRasterBand(index).SetDescription("")
        dataset = None
        self.expect_error(processing, tmp_path,
                          r"S2L2A_SUMMER \('seven'\): has 7 band\(s\) whose descriptions do not name "
                          r"S2L2A bands .*expected 12 bands in the order B01",
                          S2L2A_SUMMER=str(seven))

    def test_area_smaller_than_one_patch(self, processing, tmp_path):
        self.expect_error(processing, tmp_path,
                          r"S2L2A_SUMMER\) is 64 x 64 pixels of 10 m, smaller than one patch of PATCH_SIZE=100",
                          S2L2A_SUMMER=str(LOCATION_A / "s2l2a_summer.tif"), PATCH_SIZE=100)

    def test_corrupt_compressor(self, processing, tmp_path):
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"\x08\x07this is not a protobuf model")
        self.expect_error(processing, tmp_path, r"COMPRESSOR: 'broken.onnx' is not a valid ONNX model",
                          S2L2A_SUMMER=str(LOCATION_A / "s2l2a_summer.tif"), COMPRESSOR=str(broken))

    def test_cuda_without_cuda(self, processing, tmp_path):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA; the error path needs a machine without it")
        self.expect_error(processing, tmp_path, r"DEVICE: 'cuda' was requested but torch reports no usable CUDA",
                          S2L2A_SUMMER=str(LOCATION_A / "s2l2a_summer.tif"), DEVICE="cuda")


@pytest.mark.qgis_process
def test_qgis_process_runs_embed(tmp_path):
    output = tmp_path / "cli.tif"
    command = [
        "bash", str(REPO_ROOT / "scripts" / "with_env.sh"), "qgis_process.bin", "run", "fusedeo:embed", "--",
        f"S2L2A_SUMMER={LOCATION_A / 's2l2a_summer.tif'}", f"S1_SUMMER={LOCATION_A / 's1_summer.tif'}",
        "ENCODERS=mosaiks", "PATCH_SIZE=16", "STRIDE=16", "DIMENSIONS=8", "DEVICE=cpu", f"OUTPUT={output}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    dataset, values = read_raster(output)
    assert dataset.RasterCount == 8
    assert np.all(np.isfinite(values))
    assert "OUTPUT:" in completed.stdout


class TestFeatureStore:
    def test_runs_pooled_in_one_store(self, processing, embedded_a, tmp_path):
        from fusedeo.models.feature_store import FeatureStore

        folder, _ = embedded_a
        store_path = tmp_path / "features"
        model = str(folder / "space.fusedeo")
        run_embed(processing, tmp_path / "a.tif", **season_layers(LOCATION_A), EMBEDDING_MODEL=model,
                  OUTPUT_FEATURES=str(store_path))
        result = run_embed(processing, tmp_path / "b.tif", **season_layers(LOCATION_B), EMBEDDING_MODEL=model,
                           OUTPUT_FEATURES=str(store_path))
        assert result["OUTPUT_FEATURES"] == str(store_path)
        store = FeatureStore.open(store_path)
        assert len(store) == 32
        assert store.ids[0] == "a/0_0"
        assert store.ids[16] == "b/0_0"
        assert store.layout == [{"name": "mosaiks", "channels": 4096, "seasons": 1}]
        assert store.features.dtype == np.float32
        assert store.features.shape == (32, 4096)
        assert np.all(np.isfinite(store.features[:]))
        assert [run["output"] for run in store.runs] == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
        provenance = json.loads(gdal.Open(str(tmp_path / "b.tif")).GetMetadata()["FUSEDEO_PROVENANCE"])
        assert provenance["encoder_fingerprint"] == store.encoder_fingerprint

    def test_other_kernels_rejected(self, processing, embedded_a, tmp_path):
        from qgis.core import QgsProcessingException

        folder, _ = embedded_a
        store_path = tmp_path / "features"
        run_embed(processing, tmp_path / "a.tif", **season_layers(LOCATION_A),
                  EMBEDDING_MODEL=str(folder / "space.fusedeo"), OUTPUT_FEATURES=str(store_path))
        with pytest.raises(QgsProcessingException, match=r"was made with fitted encoder parts [0-9a-f]{16}, but "
                                                         r"this run uses [0-9a-f]{16}"):
            run_embed(processing, tmp_path / "summer.tif", S2L2A_SUMMER=str(LOCATION_B / "s2l2a_summer.tif"),
                      OUTPUT_FEATURES=str(store_path))
        assert not (tmp_path / "summer.tif").exists()


def test_stride_defaults_to_patch_size(processing, tmp_path):
    processing.run("fusedeo:embed", {"S2L2A_SUMMER": str(LOCATION_A / "s2l2a_summer.tif"), "PATCH_SIZE": 16,
                                     "DIMENSIONS": 4, "DEVICE": "cpu", "OUTPUT": str(tmp_path / "out.tif")})
    dataset = gdal.Open(str(tmp_path / "out.tif"))
    assert (dataset.RasterXSize, dataset.RasterYSize) == (4, 4)
    assert dataset.GetGeoTransform()[1] == 160.0
    assert dataset.GetMetadata()["FUSEDEO_STRIDE_PX"] == "16"


def test_stride_beyond_patch_recorded(processing, tmp_path):
    processing.run("fusedeo:embed", {"S2L2A_SUMMER": str(LOCATION_A / "s2l2a_summer.tif"), "PATCH_SIZE": 8,
                                     "STRIDE": 16, "DIMENSIONS": 4, "DEVICE": "cpu",
                                     "OUTPUT": str(tmp_path / "out.tif")})
    provenance = json.loads(gdal.Open(str(tmp_path / "out.tif")).GetMetadata()["FUSEDEO_PROVENANCE"])
    assert any("STRIDE=16 px is larger than PATCH_SIZE=8 px: only 25 % of the area is encoded" in sentence
               for sentence in provenance["decisions"])
