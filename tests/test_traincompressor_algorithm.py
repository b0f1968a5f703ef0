"""fusedeo:traincompressor on mosaiks features of the real WorldCereal locations, then used by fusedeo:embed."""

import base64
import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import LOCATION_A, LOCATION_B, season_layers
from recording_feedback import RecordingFeedback

PATCH_PX = 8
DIMENSIONS = 16
EPOCHS = 4
CROPLAND_CODE = 11


def run_embed(processing, output: Path, **parameters):  # noqa: ANN001, ANN201
    values = {"ENCODERS": ["mosaiks"], "PATCH_SIZE": PATCH_PX, "STRIDE": PATCH_PX, "DIMENSIONS": 8,
              "DEVICE": "cpu", "OUTPUT": str(output)}
    values.update(parameters)
    return processing.run("fusedeo:embed", values)


def run_train(processing, folder: Path, feedback=None, **parameters):  # noqa: ANN001, ANN201
    values = {"DIMENSIONS": DIMENSIONS, "EPOCHS": EPOCHS, "SEED": 7, "CHECKPOINT_INTERVAL": 1, "DEVICE": "cpu",
              "OUTPUT_COMPRESSOR": str(folder / "compressor.onnx"), "OUTPUT_REPORT": str(folder / "report.html")}
    values.update(parameters)
    return processing.run("fusedeo:traincompressor", values, feedback=feedback)


def onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def stores(processing, tmp_path_factory):  # noqa: ANN001, ANN201
    """Feature stores of both locations, embedded in one space (kernels drawn on location A)."""
    folder = tmp_path_factory.mktemp("stores")
    run_embed(processing, folder / "a.tif", **season_layers(LOCATION_A),
              OUTPUT_EMBEDDING_MODEL=str(folder / "space.fusedeo"), OUTPUT_FEATURES=str(folder / "store_a"))
    run_embed(processing, folder / "b.tif", **season_layers(LOCATION_B), EMBEDDING_MODEL=str(folder / "space.fusedeo"),
              OUTPUT_FEATURES=str(folder / "store_b"))
    return folder


@pytest.fixture(scope="module")
def trained(processing, stores, tmp_path_factory):  # noqa: ANN001, ANN201
    folder = tmp_path_factory.mktemp("trained")
    feedback = RecordingFeedback()
    result = run_train(processing, folder, feedback, FEATURES=str(stores / "store_a"),
                       EXTRA_FEATURES=f" {stores / 'store_b'} ; ")
    return folder, result, feedback


def cropland_labels(location: Path, stem: str) -> dict[str, float]:
    """Return the cropland fraction of every 8 px patch with at least half of its pixels labelled."""
    codes = gdal.Open(str(location / "landcover.tif")).ReadAsArray()
    rows, cols = codes.shape[0] // PATCH_PX, codes.shape[1] // PATCH_PX
    labels = {}
    for row in range(rows):
        for col in range(cols):
            window = codes[row * PATCH_PX:(row + 1) * PATCH_PX, col * PATCH_PX:(col + 1) * PATCH_PX]
            labelled = window[(window != 0) & (window != 99)]
            if labelled.size >= window.size / 2:
                labels[f"{stem}/{row}_{col}"] = float(np.mean(labelled == CROPLAND_CODE))
    return labels


class TestTrainedCompressor:
    def test_outputs_returned(self, trained):
        folder, result, _ = trained
        assert result == {"OUTPUT_COMPRESSOR": str(folder / "compressor.onnx"),
                          "OUTPUT_REPORT": str(folder / "report.html")}
        assert sorted(path.name for path in folder.iterdir()) == ["compressor.onnx", "report.html"]

    def test_metadata_records_training(self, trained, stores):
        from fusedeo.models.feature_store import FeatureStore

        folder, _, _ = trained
        metadata = onnx_metadata(folder / "compressor.onnx")
        store_a, store_b = FeatureStore.open(stores / "store_a"), FeatureStore.open(stores / "store_b")
        summary = json.loads(metadata["fusedeo_summary"])
        assert metadata["fusedeo_kind"] == "autoencoder"
        assert json.loads(metadata["fusedeo_layout"]) == store_a.layout == [
            {"name": "mosaiks", "channels": 4096, "seasons": 1}]
        assert metadata["fusedeo_encoder_fingerprint"] == store_a.encoder_fingerprint
        pooled = np.concatenate([store_a.features[:], store_b.features[:]]).astype(np.float32)
        assert metadata["fusedeo_training_features_sha256"] == hashlib.sha256(pooled.tobytes()).hexdigest()
        assert summary["samples"] == len(store_a) + len(store_b) == 128
        assert summary["train_samples"] + summary["holdout_samples"] == 128
        assert summary["checkpoint_epochs"] == [1, 2, 3, 4]
        assert summary["chosen_epoch"] == 1 + int(np.argmax(summary["proxy_curve"]))
        assert summary["proxy"] == "label-free"
        assert json.loads(metadata["fusedeo_normalisation"])["output_conditioning"] == "pca_rotated"

    def test_auto_conditioning_without_labels_warned(self, trained):
        _, _, feedback = trained
        assert any("Output conditioning: pca_rotated (OUTPUT_CONDITIONING=auto without LABELS_FOLDER"
                   in warning for warning in feedback.warnings)

    def test_report_has_curves_and_chosen_epoch(self, trained):
        folder, _, _ = trained
        summary = json.loads(onnx_metadata(folder / "compressor.onnx")["fusedeo_summary"])
        text = (folder / "report.html").read_text(encoding="utf-8")
        image = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
        assert image is not None
        assert base64.b64decode(image.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'<tr class="chosen"><td>{summary["chosen_epoch"]}</td>' in text
        assert text.count("<tr class=\"chosen\">") == 1

    def test_embed_uses_compressor(self, processing, trained, stores, tmp_path):
        import onnxruntime

        from fusedeo.models.feature_store import FeatureStore

        folder, _, _ = trained
        output = tmp_path / "b_autoencoder.tif"
        run_embed(processing, output, **season_layers(LOCATION_B), EMBEDDING_MODEL=str(stores / "space.fusedeo"),
                  COMPRESSOR=str(folder / "compressor.onnx"))
        dataset = gdal.Open(str(output))
        provenance = json.loads(dataset.GetMetadata()["FUSEDEO_PROVENANCE"])
        assert dataset.RasterCount == DIMENSIONS
        assert provenance["compressor"]["kind"] == "autoencoder"
        assert provenance["compressor"]["execution_provider"] == "CPUExecutionProvider"
        # Every pixel is the compressor applied to the stored fused vector of that patch.
        store = FeatureStore.open(stores / "store_b")
        session = onnxruntime.InferenceSession(str(folder / "compressor.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(None, {"features": np.asarray(store.features[:], dtype=np.float32)})[0]
        values = dataset.ReadAsArray()
        for row_index, identifier in enumerate(store.ids):
            row, col = (int(part) for part in identifier.split("/")[1].split("_"))
            np.testing.assert_allclose(values[:, row, col], expected[row_index], atol=1e-5)

    def test_ssl4eo_with_other_kernels_rejected(self, processing, trained, tmp_path):
        from make_ssl4eo_fixture import make_fixture
        from qgis.core import QgsProcessingException

        folder, _, _ = trained
        make_fixture(tmp_path / "dataset", [LOCATION_B], 16)
        with pytest.raises(QgsProcessingException, match=r"COMPRESSOR: 'compressor.onnx' was trained on features "
                                                         r"of fitted encoder parts [0-9a-f]{16}, but this run's "
                                                         r"encoders have [0-9a-f]{16}"):
            processing.run("fusedeo:embedssl4eo", {
                "DATASET_FOLDER": str(tmp_path / "dataset"), "ENCODERS": ["mosaiks"], "DEVICE": "cpu",
                "COMPRESSOR": str(folder / "compressor.onnx"), "OUTPUT_CSV": str(tmp_path / "out.csv")})
        assert not (tmp_path / "out.csv").exists()

    def test_embed_with_other_kernels_rejected(self, processing, trained, tmp_path):
        from qgis.core import QgsProcessingException

        folder, _, _ = trained
        with pytest.raises(QgsProcessingException, match=r"COMPRESSOR: 'compressor.onnx' was trained on features "
                                                         r"of fitted encoder parts [0-9a-f]{16}, but this run would "
                                                         r"draw new mosaiks kernels"):
            run_embed(processing, tmp_path / "b.tif", **season_layers(LOCATION_B),
                      COMPRESSOR=str(folder / "compressor.onnx"))
        assert not (tmp_path / "b.tif").exists()


class TestLabels:
    def test_labels_choose_checkpoint_and_conditioning(self, processing, stores, tmp_path):
        labels_folder = tmp_path / "labels"
        labels_folder.mkdir()
        labels = {**cropland_labels(LOCATION_A, "a"), **cropland_labels(LOCATION_B, "b")}
        with (labels_folder / "cropland__regression.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["id", "label"])
            writer.writerows(sorted(labels.items()))
        feedback = RecordingFeedback()
        run_train(processing, tmp_path, feedback, FEATURES=str(stores / "store_a"),
                  EXTRA_FEATURES=str(stores / "store_b"), LABELS_FOLDER=str(labels_folder))
        summary = json.loads(onnx_metadata(tmp_path / "compressor.onnx")["fusedeo_summary"])
        scores = summary["conditioning_scores"]
        assert summary["proxy"] == "labels"
        assert summary["proxy_tasks"] == ["cropland"]
        assert summary["chosen_epoch"] == 1 + int(np.argmax(summary["proxy_curve"]))
        assert sorted(scores) == ["as_trained", "pca_rotated", "whitened"]
        assert summary["conditioning"] == max(scores, key=scores.get)
        assert any("chosen by the proxy" in info for info in feedback.infos)
        assert any(info.startswith("Proxy: NeuCo-Bench score (neuco probe, 40 splits, mean Q) on 1 labelled task")
                   for info in feedback.infos)


class TestErrors:
    def test_stores_of_other_layouts_rejected(self, processing, stores, tmp_path):
        from qgis.core import QgsProcessingException

        from fusedeo.models.feature_store import FeatureStore

        other = FeatureStore.create_or_append(tmp_path / "other", [{"name": "mosaiks", "settings": {}}],
                                              [{"name": "mosaiks", "channels": 2048, "seasons": 2}], "0" * 64)
        other.append(["c/0_0"], np.zeros((1, 4096), dtype=np.float32), {"output": "c.tif"})
        with pytest.raises(QgsProcessingException, match=r"Feature store '.*other' has layout "
                                                         r".*\"channels\": 2048.*\"seasons\": 2.*, but feature store "
                                                         r"'.*store_a' has layout .*\"channels\": 4096"):
            run_train(processing, tmp_path, FEATURES=str(stores / "store_a"), EXTRA_FEATURES=str(tmp_path / "other"))
        assert not (tmp_path / "compressor.onnx").exists()

    def test_stores_of_other_kernels_rejected(self, processing, stores, tmp_path):
        from qgis.core import QgsProcessingException

        run_embed(processing, tmp_path / "c.tif", **season_layers(LOCATION_B), OUTPUT_FEATURES=str(tmp_path / "c"))
        with pytest.raises(QgsProcessingException, match=r"was made with fitted encoder parts [0-9a-f]{16}, but "
                                                         r"feature store '.*store_a' uses [0-9a-f]{16}"):
            run_train(processing, tmp_path, FEATURES=str(stores / "store_a"), EXTRA_FEATURES=str(tmp_path / "c"))

    def test_bad_label_file_name(self, processing, stores, tmp_path):
        from qgis.core import QgsProcessingException

        (tmp_path / "cropland.csv").write_text("id,label\na/0_0,1\n")
        with pytest.raises(QgsProcessingException, match=r"LABELS_FOLDER: labels file .*cropland.csv: the "
                                                         r"name must be <task>__<type>.csv"):
            run_train(processing, tmp_path, FEATURES=str(stores / "store_a"), LABELS_FOLDER=str(tmp_path))

    def test_not_a_feature_store(self, processing, tmp_path):
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match=r"FEATURES: '.*' is not a FusedEO feature store"):
            run_train(processing, tmp_path, FEATURES=str(LOCATION_A))


def test_report_is_optional(processing, stores, tmp_path):
    values = {"DIMENSIONS": 8, "EPOCHS": 1, "SEED": 7, "DEVICE": "cpu", "FEATURES": str(stores / "store_a"),
              "OUTPUT_COMPRESSOR": str(tmp_path / "compressor.onnx")}
    result = processing.run("fusedeo:traincompressor", values)
    assert result["OUTPUT_COMPRESSOR"] == str(tmp_path / "compressor.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["compressor.onnx"]


def test_same_seed_same_model(processing, stores, tmp_path):
    import onnx

    models = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        run_train(processing, folder, FEATURES=str(stores / "store_a"), EPOCHS=1, DIMENSIONS=8)
        models.append(onnx.load(str(folder / "compressor.onnx")))
    first, second = ({item.name: onnx.numpy_helper.to_array(item) for item in model.graph.initializer}
                     for model in models)
    assert sorted(first) == sorted(second)
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_cancel_leaves_no_output(processing, stores, tmp_path):
    feedback = RecordingFeedback(cancel_after_percent=30)
    result = run_train(processing, tmp_path, feedback, FEATURES=str(stores / "store_a"),
                       EXTRA_FEATURES=str(stores / "store_b"))
    assert result == {}
    assert list(tmp_path.iterdir()) == []
    assert any("Training cancelled in epoch" in info for info in feedback.infos)


@pytest.mark.qgis_process
def test_qgis_process_pools_two_stores(stores, tmp_path):
    import subprocess

    from conftest import REPO_ROOT

    output = tmp_path / "cli.onnx"
    command = [
        "bash", str(REPO_ROOT / "scripts" / "with_env.sh"), "qgis_process.bin", "run", "fusedeo:traincompressor",
        "--", f"FEATURES={stores / 'store_a'}", f"EXTRA_FEATURES={stores / 'store_b'}", "DIMENSIONS=8", "EPOCHS=2",
        "OUTPUT_CONDITIONING=whitened", "DEVICE=cpu", f"OUTPUT_COMPRESSOR={output}",
        f"OUTPUT_REPORT={tmp_path / 'cli.html'}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summary = json.loads(onnx_metadata(output)["fusedeo_summary"])
    assert summary["samples"] == 128
    assert summary["output_width"] == 8
    assert summary["conditioning"] == "whitened"
    assert "OUTPUT_COMPRESSOR:" in completed.stdout
