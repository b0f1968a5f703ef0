"""The SSL4EO-S12 dataset path: reader, fusedeo:embedssl4eo, resume, skips and the submission check.

Fixtures are zarr.zip archives built at test time by make_ssl4eo_fixture.py
from the real WorldCereal pixels: every 16 px crop of a location becomes one
sample id, ``<last 8 characters of the location>_<row>_<col>``.
"""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import LOCATION_A, LOCATION_B, REPO_ROOT, season_layers
from make_ssl4eo_fixture import location_stack, make_fixture

CROP_PX = 16


def read_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], {row[0]: np.array(row[1:], dtype=np.float64) for row in rows[1:]}


def sample_id(location: Path, row: int, col: int) -> str:
    return f"{location.name[-8:]}_{row}_{col}"


@pytest.fixture(scope="module")
def exact_dataset(tmp_path_factory) -> Path:  # noqa: ANN001
    """Location A as 16 samples with float32 S1, so the pixels equal the layer path's exactly."""
    root = tmp_path_factory.mktemp("exact") / "dataset"
    make_fixture(root, [LOCATION_A], CROP_PX, s1_dtype="float32")
    return root


@pytest.fixture(scope="module")
def published_dataset(tmp_path_factory) -> Path:  # noqa: ANN001
    """Both locations as 32 samples in the published dtypes (S1 float16, S2 int16)."""
    root = tmp_path_factory.mktemp("published") / "dataset"
    make_fixture(root, [LOCATION_A, LOCATION_B], CROP_PX)
    return root


@pytest.fixture(scope="module")
def embed_space(processing, tmp_path_factory):  # noqa: ANN001, ANN201
    """fusedeo:embed on location A's GeoTIFF layers with PATCH_SIZE = STRIDE = the crop size."""
    folder = tmp_path_factory.mktemp("embed")
    processing.run("fusedeo:embed", {
        **season_layers(LOCATION_A), "PATCH_SIZE": CROP_PX, "STRIDE": CROP_PX, "DEVICE": "cpu",
        "OUTPUT": str(folder / "embedding.tif"), "OUTPUT_EMBEDDING_MODEL": str(folder / "space.fusedeo"),
    })
    return folder / "embedding.tif", folder / "space.fusedeo"


def run_ssl4eo(processing, dataset: Path, output: Path, **parameters):  # noqa: ANN001, ANN201
    values = {"DATASET_FOLDER": str(dataset), "ENCODERS": ["mosaiks"], "DEVICE": "cpu", "OUTPUT_CSV": str(output)}
    values.update(parameters)
    return processing.run("fusedeo:embedssl4eo", values)


class TestReader:
    def test_stack_equals_layer_path(self, exact_dataset):
        from fusedeo.raster.ssl4eo import read_sample, scan_dataset

        dataset = scan_dataset(exact_dataset)
        reference, _ = location_stack(LOCATION_A)
        sample = next(item for item in dataset.samples if item.id == sample_id(LOCATION_A, 2, 3))
        stack = read_sample(sample, dataset.modalities, "without_offset")
        expected = reference[:, :, 32:48, 48:64]
        assert stack.values.shape == (4, 27, CROP_PX, CROP_PX)
        assert stack.values.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(stack.values), np.isnan(expected))
        np.testing.assert_array_equal(np.nan_to_num(stack.values), np.nan_to_num(expected))

    def test_single_season_read(self, exact_dataset):
        from fusedeo.raster.ssl4eo import read_sample, scan_dataset

        dataset = scan_dataset(exact_dataset)
        whole = read_sample(dataset.samples[5], dataset.modalities, "without_offset").values
        autumn = read_sample(dataset.samples[5], dataset.modalities, "without_offset", season=2).values
        np.testing.assert_array_equal(np.nan_to_num(autumn[2]), np.nan_to_num(whole[2]))
        assert np.all(np.isnan(autumn[[0, 1, 3]]))

    def test_missing_bands_are_nan(self, exact_dataset):
        from fusedeo.raster.bands import Sensor, channel_index
        from fusedeo.raster.ssl4eo import read_sample, scan_dataset

        dataset = scan_dataset(exact_dataset)
        stack = read_sample(dataset.samples[0], dataset.modalities, "without_offset").values
        assert np.all(np.isnan(stack[:, channel_index(Sensor.S2L2A, "B01")]))
        assert np.all(np.isnan(stack[:, channel_index(Sensor.S2L2A, "B09")]))
        assert np.all(np.isnan(stack[:, 2:15]))  # no L1C in the source
        assert np.isfinite(stack[:, channel_index(Sensor.S2L2A, "B04")]).mean() > 0.9
        assert np.all(np.isfinite(stack[:, channel_index(Sensor.S1, "VH")]))

    def test_fixture_attrs_mark_filled_bands(self, exact_dataset):
        import zarr

        path = next((exact_dataset / "s2l2a").glob("*/*.zarr.zip"))
        store = zarr.storage.ZipStore(str(path), mode="r")
        try:
            group = zarr.open_group(store, mode="r")
            marked = group.attrs["fusedeo_fixture"]["filled_bands"]
            assert group["bands"].dtype == np.int16
            assert list(group["band"][:]) == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                              "B09", "B11", "B12"]
        finally:
            store.close()
        assert marked["s2l2a"] == ["B01", "B09"]
        assert len(marked["s2l1c"]) == 13

    def test_offset_removed(self, tmp_path, exact_dataset):
        from fusedeo.raster.ssl4eo import read_sample, scan_dataset

        make_fixture(tmp_path / "v11", [LOCATION_A], 32, s1_dtype="float32", offset=True)
        shifted = scan_dataset(tmp_path / "v11")
        plain = scan_dataset(exact_dataset)
        with_offset = read_sample(shifted.samples[0], shifted.modalities, "with_offset").values
        raw = read_sample(shifted.samples[0], shifted.modalities, "without_offset").values
        reference = read_sample(plain.samples[0], plain.modalities, "without_offset").values  # crop 0_0, 16 px
        np.testing.assert_array_equal(np.nan_to_num(with_offset[..., :16, :16]), np.nan_to_num(reference))
        np.testing.assert_allclose(np.nanmax(raw[:, 15:] - with_offset[:, 15:]), 1000.0)

    def test_sample_dimension_rejected(self, tmp_path):
        import zarr

        from fusedeo.errors import ArchiveError
        from fusedeo.raster.bands import Sensor
        from fusedeo.raster.ssl4eo import read_modality

        # An SSL4EO-S12 v1.1 training file contains 64 locations along a leading sample dimension.
        path = tmp_path / "batch.zarr.zip"
        store = zarr.storage.ZipStore(str(path), mode="w")
        group = zarr.group(store=store)
        group.create_dataset("bands", data=np.zeros((64, 4, 2, 8, 8), dtype=np.float16)).attrs[
            "_ARRAY_DIMENSIONS"] = ["sample", "time", "band", "y", "x"]
        store.close()
        with pytest.raises(ArchiveError, match=r"'bands' has dimensions \('sample', 'time', 'band', 'y', 'x'\); "
                                               r"expected \(time, band, y, x\) for one location"):
            read_modality(path, Sensor.S1, "without_offset")

    def test_lowercase_s1_names_matched(self, tmp_path):
        from fusedeo.raster.bands import Sensor
        from fusedeo.raster.ssl4eo import read_modality
        from make_ssl4eo_fixture import write_archive

        # The published S1 archives name their bands 'vv' and 'vh', in lower case.
        values = np.stack([np.full((4, 8, 8), -12.5), np.full((4, 8, 8), -19.0)], axis=1).astype(np.float16)
        write_archive(tmp_path / "s1.zarr.zip", values[:, ::-1], ["vh", "vv"], {})
        stack, missing = read_modality(tmp_path / "s1.zarr.zip", Sensor.S1, "without_offset")
        assert missing == []
        assert np.all(stack[:, 0] == -12.5)
        assert np.all(stack[:, 1] == -19.0)

    def test_unnamed_bands_wrong_count(self, tmp_path):
        import zarr

        from fusedeo.errors import ArchiveError
        from fusedeo.raster.bands import Sensor
        from fusedeo.raster.ssl4eo import read_modality

        store = zarr.storage.ZipStore(str(tmp_path / "l2a.zarr.zip"), mode="w")
        zarr.group(store=store).create_dataset("bands", data=np.ones((4, 10, 8, 8), dtype=np.int16))
        store.close()
        with pytest.raises(ArchiveError, match=r"has 10 bands and no band names; expected 12 s2l2a bands in the "
                                               r"order B01, B02"):
            read_modality(tmp_path / "l2a.zarr.zip", Sensor.S2L2A, "without_offset")

    def test_missing_folder_named(self, tmp_path):
        from fusedeo.errors import InputError
        from fusedeo.raster.ssl4eo import scan_dataset

        (tmp_path / "S2L2A").mkdir()
        with pytest.raises(InputError, match=r"DATASET_FOLDER: '.*' has none of the modality folders s1, s2l1c, "
                                             r"s2l2a"):
            scan_dataset(tmp_path)


class TestSameAsEmbed:
    def test_embeddings_equal_embed(self, processing, exact_dataset, embed_space, tmp_path):
        raster_path, model_path = embed_space
        output = tmp_path / "submission.csv"
        result = run_ssl4eo(processing, exact_dataset, output, EMBEDDING_MODEL=str(model_path))
        assert result["ROWS"] == 16
        assert result["SKIPPED"] == 0
        header, rows = read_csv(output)
        embedded = gdal.Open(str(raster_path)).ReadAsArray()  # (bands, rows, cols)
        assert header == ["id", *[str(index) for index in range(embedded.shape[0])]]
        differences = [np.max(np.abs(rows[sample_id(LOCATION_A, row, col)] - embedded[:, row, col]))
                       for row in range(4) for col in range(4)]
        assert max(differences) <= 1e-5, f"max abs difference to fusedeo:embed: {max(differences):.3g}"
        provenance = json.loads((tmp_path / "submission.provenance.json").read_text())
        fingerprint = gdal.Open(str(raster_path)).GetMetadata()["FUSEDEO_EMBEDDING_FINGERPRINT"]
        assert provenance["embedding_fingerprint"] == fingerprint
        assert provenance["status"] == "complete"

    def test_csv_validates(self, processing, exact_dataset, embed_space, tmp_path):
        _, model_path = embed_space
        output = tmp_path / "submission.csv"
        run_ssl4eo(processing, exact_dataset, output, EMBEDDING_MODEL=str(model_path))
        result = processing.run("fusedeo:checksubmission", {
            "INPUT": str(output), "DATASET_FOLDER": str(exact_dataset), "DIMENSIONS": 15})
        assert result == {"ROWS": 16, "DIMENSIONS_FOUND": 15}
        header, rows = read_csv(output)
        assert list(rows) == sorted(rows)
        assert all(np.all(np.isfinite(values)) for values in rows.values())
        assert (tmp_path / "submission.exclude.txt").read_text() == ""


class TestFittingRun:
    def test_fits_space_on_dataset(self, processing, published_dataset, tmp_path):
        output = tmp_path / "fitted.csv"
        result = run_ssl4eo(processing, published_dataset, output, DIMENSIONS=8,
                            OUTPUT_EMBEDDING_MODEL=str(tmp_path / "space.fusedeo"),
                            OUTPUT_FEATURES=str(tmp_path / "features"))
        assert result["ROWS"] == 32
        header, rows = read_csv(output)
        assert header == ["id", *[str(index) for index in range(8)]]
        assert len(rows) == 32
        provenance = json.loads((tmp_path / "fitted.provenance.json").read_text())
        channels = provenance["encoders"][0]["settings"]["channels"]
        assert len(channels) == 27
        assert provenance["compressor"]["kind"] == "pca"
        assert provenance["compressor"]["samples"] == 32
        assert provenance["s2_offset"] == "without_offset"
        assert "s2l2a: band(s) B01, B09 nodata only in 32 sample(s)" in provenance["decisions"][1]
        assert provenance["decisions"][0].startswith("s2l1c: band(s) B01, B02, B03, B04, B05, B06, B07, B08, "
                                                     "B8A, B09, B10, B11, B12 nodata only in 32 sample(s)")
        from fusedeo.models.feature_store import FeatureStore

        store = FeatureStore.open(tmp_path / "features")
        assert store.ids == sorted(rows)
        assert store.features.shape == (32, 4096)

    def test_reuse_reproduces_fitted_csv(self, processing, published_dataset, tmp_path):
        run_ssl4eo(processing, published_dataset, tmp_path / "fitted.csv", DIMENSIONS=8,
                   OUTPUT_EMBEDDING_MODEL=str(tmp_path / "space.fusedeo"))
        run_ssl4eo(processing, published_dataset, tmp_path / "again.csv",
                   EMBEDDING_MODEL=str(tmp_path / "space.fusedeo"))
        assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "fitted.csv").read_bytes()

    def test_cancel_leaves_nothing(self, processing, published_dataset, tmp_path):
        from recording_feedback import RecordingFeedback

        feedback = RecordingFeedback(cancel_after_percent=20.0)
        result = processing.run("fusedeo:embedssl4eo", {
            "DATASET_FOLDER": str(published_dataset), "ENCODERS": ["mosaiks"], "DEVICE": "cpu", "DIMENSIONS": 8,
            "OUTPUT_CSV": str(tmp_path / "cancelled.csv")}, feedback=feedback)
        assert result == {}
        assert sorted(path.name for path in tmp_path.iterdir()) == []
        assert any("no output was written" in text for text in feedback.infos)


class CancelAfterSamples:
    """Reporter that requests cancellation once progress passes ``percent``."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.cancelled = False

    def info(self, message: str) -> None:
        pass

    warning = debug = info

    def progress(self, percent: float) -> None:
        self.cancelled = self.cancelled or percent > self.percent

    def is_canceled(self) -> bool:
        return self.cancelled


class TestResume:
    def request(self, dataset: Path, output: Path, model: Path):  # noqa: ANN201
        from fusedeo.models.ssl4eo_run import Ssl4eoRequest

        return Ssl4eoRequest(str(dataset), ["mosaiks"], str(output), device="cpu", batch_size=2,
                             embedding_model_path=str(model))

    def test_cancelled_run_resumes_to_same_file(self, exact_dataset, embed_space, tmp_path):
        from fusedeo.errors import RunCancelledError
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        _, model = embed_space
        run(self.request(exact_dataset, tmp_path / "whole.csv", model), LoggingReporter())
        with pytest.raises(RunCancelledError, match=r"rows are kept in '.*partial.csv'\. Run again with the same "
                                                    r"OUTPUT_CSV and EMBEDDING_MODEL"):
            run(self.request(exact_dataset, tmp_path / "partial.csv", model), CancelAfterSamples(50.0))
        _, kept_rows = read_csv(tmp_path / "partial.csv")
        assert 0 < len(kept_rows) < 16
        assert json.loads((tmp_path / "partial.provenance.json").read_text())["status"] == "incomplete"
        result = run(self.request(exact_dataset, tmp_path / "partial.csv", model), LoggingReporter())
        assert result.rows_resumed == len(kept_rows)
        assert result.rows_written == 16 - len(kept_rows)
        assert (tmp_path / "partial.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()

    def test_feature_store_complete_after_resume(self, exact_dataset, embed_space, tmp_path):
        from fusedeo.errors import RunCancelledError
        from fusedeo.models.feature_store import FeatureStore
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        _, model = embed_space
        request = self.request(exact_dataset, tmp_path / "out.csv", model)
        request.output_features_path = str(tmp_path / "features")
        with pytest.raises(RunCancelledError):
            run(request, CancelAfterSamples(30.0))
        _, kept_rows = read_csv(tmp_path / "out.csv")
        assert FeatureStore.open(tmp_path / "features").ids == sorted(kept_rows)
        run(request, LoggingReporter())
        store = FeatureStore.open(tmp_path / "features")
        _, rows = read_csv(tmp_path / "out.csv")
        assert store.ids == sorted(rows)
        assert len(store.runs) == 2
        assert store.features.shape == (16, 4096)

    def test_killed_run_with_cut_line_resumes(self, exact_dataset, embed_space, tmp_path):
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        _, model = embed_space
        run(self.request(exact_dataset, tmp_path / "whole.csv", model), LoggingReporter())
        whole = (tmp_path / "whole.csv").read_bytes()
        shutil.copy(tmp_path / "whole.provenance.json", tmp_path / "killed.provenance.json")
        lines = whole.split(b"\n")
        # Five complete rows, then half of the sixth, as a process killed while writing leaves it.
        (tmp_path / "killed.csv").write_bytes(b"\n".join(lines[:6]) + b"\n" + lines[6][: len(lines[6]) // 2])
        result = run(self.request(exact_dataset, tmp_path / "killed.csv", model), LoggingReporter())
        assert result.rows_resumed == 5
        assert (tmp_path / "killed.csv").read_bytes() == whole

    def test_other_space_rejected(self, published_dataset, exact_dataset, embed_space, tmp_path):
        from fusedeo.errors import LayoutMismatchError
        from fusedeo.models.ssl4eo_run import Ssl4eoRequest
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        _, model = embed_space
        run(Ssl4eoRequest(str(published_dataset), ["mosaiks"], str(tmp_path / "out.csv"), dimensions=4,
                          device="cpu", output_model_path=str(tmp_path / "other.fusedeo")), LoggingReporter())
        with pytest.raises(LayoutMismatchError, match=r"OUTPUT_CSV '.*out.csv' contains embeddings of fingerprint "
                                                      r"[0-9a-f]{16}, but this run's embedding space is [0-9a-f]{16}"):
            run(self.request(exact_dataset, tmp_path / "out.csv", model), LoggingReporter())


class TestSkippedSamples:
    @pytest.fixture()
    def damaged(self, exact_dataset, tmp_path) -> Path:
        root = tmp_path / "damaged"
        shutil.copytree(exact_dataset, root)
        truncated = next((root / "s2l2a").glob(f"*/{sample_id(LOCATION_A, 0, 1)}.zarr.zip"))
        truncated.write_bytes(truncated.read_bytes()[:500])
        garbage = next((root / "s1").glob(f"*/{sample_id(LOCATION_A, 1, 1)}.zarr.zip"))
        garbage.write_bytes(b"not a zip archive at all")
        next((root / "s1").glob(f"*/{sample_id(LOCATION_A, 3, 3)}.zarr.zip")).unlink()
        return root

    def test_corrupt_and_incomplete_skipped(self, processing, damaged, embed_space, tmp_path):
        _, model = embed_space
        output = tmp_path / "out.csv"
        result = run_ssl4eo(processing, damaged, output, EMBEDDING_MODEL=str(model))
        skipped = [sample_id(LOCATION_A, 0, 1), sample_id(LOCATION_A, 1, 1), sample_id(LOCATION_A, 3, 3)]
        assert result["ROWS"] == 13
        assert result["SKIPPED"] == 3
        _, rows = read_csv(output)
        assert not set(skipped) & set(rows)
        assert (tmp_path / "out.exclude.txt").read_text().split() == sorted(skipped)
        reasons = {item["id"]: item["reason"]
                   for item in json.loads((tmp_path / "out.provenance.json").read_text())["skipped"]}
        assert "is not a readable zip archive" in reasons[sample_id(LOCATION_A, 0, 1)]
        assert "is not a readable zip archive" in reasons[sample_id(LOCATION_A, 1, 1)]
        assert reasons[sample_id(LOCATION_A, 3, 3)] == "no s1 archive"

    def test_fitting_run_skips_corrupt(self, processing, damaged, tmp_path):
        result = run_ssl4eo(processing, damaged, tmp_path / "fitted.csv", DIMENSIONS=4)
        assert result["ROWS"] == 13
        assert (tmp_path / "fitted.exclude.txt").read_text().count("\n") == 3


class TestCheckSubmission:
    def write(self, path: Path, header: list[str], rows: list[list[str]]) -> Path:
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    def expect_error(self, processing, match: str, **parameters) -> None:  # noqa: ANN001
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match=match):
            processing.run("fusedeo:checksubmission", parameters)

    def test_nan_and_text_named(self, processing, tmp_path):
        path = self.write(tmp_path / "bad.csv", ["id", "0", "1"],
                          [["a", "1.0", "nan"], ["b", "2.0", "high"], ["c", "1", "2"]])
        self.expect_error(processing, r"1 row\(s\) have non-numeric values, which NeuCo-Bench would read as 0: "
                                      r"line 3 \('high'\)", INPUT=str(path))
        self.expect_error(processing, r"1 row\(s\) have NaN, infinite or beyond-float32 values.*line 2 \(id a\)",
                          INPUT=str(path))

    def test_missing_ids_named(self, processing, exact_dataset, tmp_path):
        path = self.write(tmp_path / "few.csv", ["id", "0"], [[sample_id(LOCATION_A, 0, 0), "1.5"]])
        self.expect_error(processing, r"15 of the 16 dataset ids are missing and not in the exclude file: "
                                      rf"{sample_id(LOCATION_A, 0, 1)}, ",
                          INPUT=str(path), DATASET_FOLDER=str(exact_dataset))

    def test_wrong_dimension_named(self, processing, tmp_path):
        path = self.write(tmp_path / "dims.csv", ["id", "0", "2"], [["a", "1", "2"]])
        self.expect_error(processing, r"dimension columns must be 0 … N-1 without gaps or repeats; found 2 "
                                      r"columns, missing 1", INPUT=str(path))
        self.expect_error(processing, r"the file has 2 dimension columns; expected 1024", INPUT=str(path),
                          DIMENSIONS=1024)

    def test_suffix_and_duplicates_named(self, processing, tmp_path):
        path = self.write(tmp_path / "ids.csv", ["id", "0"], [["a.zarr.zip", "1"], ["a", "2"], ["b", "3", "4"]])
        self.expect_error(processing, r"1 id\(s\) keep the archive suffix \(a.zarr.zip\)", INPUT=str(path))
        self.expect_error(processing, r"1 id\(s\) occur more than once: a\.", INPUT=str(path))
        self.expect_error(processing, r"1 row\(s\) have a different number of fields than the header \(2\): "
                                      r"line 4 \(3 fields\)", INPUT=str(path))


class TestBadParameters:
    def test_compressor_replaces_model_compressor(self, exact_dataset, embed_space, tmp_path):
        import zipfile

        from fusedeo.models.ssl4eo_run import Ssl4eoRequest
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        _, model = embed_space
        compressor = tmp_path / "same.onnx"
        with zipfile.ZipFile(model) as archive:
            compressor.write_bytes(archive.read("compressor.onnx"))
        alone = Ssl4eoRequest(str(exact_dataset), ["mosaiks"], str(tmp_path / "model.csv"), device="cpu",
                              embedding_model_path=str(model))
        both = Ssl4eoRequest(str(exact_dataset), ["mosaiks"], str(tmp_path / "both.csv"), device="cpu",
                             embedding_model_path=str(model), compressor_path=str(compressor))
        run(alone, LoggingReporter())
        run(both, LoggingReporter())
        assert (tmp_path / "both.csv").read_text() == (tmp_path / "model.csv").read_text()

    def test_auto_offset_rejected(self, exact_dataset, tmp_path):
        from fusedeo.errors import InputError
        from fusedeo.models.ssl4eo_run import Ssl4eoRequest
        from fusedeo.models.ssl4eo_run import run_ssl4eo as run
        from fusedeo.reporting import LoggingReporter

        request = Ssl4eoRequest(str(exact_dataset), ["mosaiks"], str(tmp_path / "x.csv"), s2_offset="auto")
        with pytest.raises(InputError, match=r"S2_OFFSET: 'auto' is not valid for a dataset folder; expected "
                                             r"without_offset or with_offset"):
            run(request, LoggingReporter())

    def test_missing_dataset_folder(self, processing, tmp_path):
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match=r"DATASET_FOLDER: folder '.*nowhere' does not exist"):
            run_ssl4eo(processing, tmp_path / "nowhere", tmp_path / "x.csv")


def test_console_commands(exact_dataset, embed_space, tmp_path):
    _, model = embed_space
    output = tmp_path / "console.csv"
    completed = subprocess.run(
        [str(REPO_ROOT / "scripts" / "fusedeo-embed-ssl4eo"), str(exact_dataset), str(output),
         "--embedding-model", str(model), "--device", "cpu"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{output}: valid NeuCo-Bench CSV, 16 rows of 15 dimensions." in completed.stdout
    (tmp_path / "console.exclude.txt").unlink()
    with open(output, "a") as file:
        file.write("unknown_id" + ",0" * 15 + "\n")
    checked = subprocess.run(
        [str(REPO_ROOT / "scripts" / "fusedeo-check-submission"), str(output), "--dataset-folder",
         str(exact_dataset), "--dimensions", "15"], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1
    assert "problem: 1 id(s) are not in the dataset folder" in checked.stdout


@pytest.mark.qgis_process
def test_qgis_process_runs_embedssl4eo(exact_dataset, embed_space, tmp_path):
    _, model = embed_space
    output = tmp_path / "cli.csv"
    command = [
        "bash", str(REPO_ROOT / "scripts" / "with_env.sh"), "qgis_process.bin", "run", "fusedeo:embedssl4eo", "--",
        f"DATASET_FOLDER={exact_dataset}", "ENCODERS=mosaiks", "DEVICE=cpu", "S2_OFFSET=without_offset",
        f"EMBEDDING_MODEL={model}", f"OUTPUT_CSV={output}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    header, rows = read_csv(output)
    assert len(header) == 16
    assert len(rows) == 16
    assert "ROWS:\t16" in completed.stdout
