"""Autoencoder compressor core: checkpoint selection, ONNX export, determinism, proxies."""

import json

import numpy as np
import pytest

from fusedeo.errors import InputError, LayoutMismatchError
from fusedeo.models.autoencoder import (
    CONDITIONINGS,
    AutoencoderConfig,
    encode,
    encoder_from_state,
    export_onnx,
    fit_conditioning,
    resolve_block_weights,
    torch_reference,
    train_autoencoder,
)
from fusedeo.models.compressor import OnnxCompressor
from fusedeo.models.compressor_proxy import ProxyTask, RidgeProxy, label_free_proxy, read_label_tasks
from fusedeo.reporting import LoggingReporter

LAYOUT = [{"name": "alpha", "channels": 32, "seasons": 4}, {"name": "beta", "channels": 64, "seasons": 1}]
CONFIG = AutoencoderConfig(dimensions=8, epochs=8, seed=5, hidden_width=256, learning_rate=1e-3,
                           checkpoint_interval=1)


def low_rank_features(seed: int = 3, rows: int = 240) -> np.ndarray:
    """Rows on an 8-dimensional subspace of 192 values plus a little noise; beta 10x larger."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 8)) @ rng.normal(size=(8, 192)) + 0.1 * rng.normal(size=(rows, 192))
    features[:, 128:] *= 10.0
    return features.astype(np.float32)


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    features = low_rank_features()
    return features[:192], features[192:]


def export(trained, conditioning, train):  # noqa: ANN001, ANN201
    return export_onnx(trained, conditioning, LAYOUT, {"kind": "autoencoder"}, {}, "0" * 64, "f" * 64)


class TestCheckpointSelection:
    def test_proxy_peak_chosen_while_loss_falls(self, split):
        """A proxy that peaks at epoch 3 (targets: the epoch-3 embeddings) beats the falling loss."""
        train, holdout = split
        weights = resolve_block_weights("inverse_variance", LAYOUT, train)
        recorded = {}

        def record(train_embeddings, holdout_embeddings):  # noqa: ANN001, ANN202
            recorded[len(recorded) + 1] = (train_embeddings.copy(), holdout_embeddings.copy())
            return 0.0

        train_autoencoder(train, holdout, LAYOUT, CONFIG, weights, record, LoggingReporter())
        train_targets, holdout_targets = (values.astype(np.float64) for values in recorded[3])
        task = ProxyTask("epoch 3 embedding", "regression", np.arange(len(train)), np.arange(len(holdout)),
                         train_targets, holdout_targets)
        proxy = RidgeProxy("labels", [task])
        trained = train_autoencoder(train, holdout, LAYOUT, CONFIG, weights, proxy.score, LoggingReporter())

        losses = [point.holdout_loss for point in trained.checkpoints]
        scores = [point.proxy for point in trained.checkpoints]
        assert [point.epoch for point in trained.checkpoints] == list(range(1, 9))
        assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
        assert int(np.argmax(scores)) + 1 == 3
        assert trained.chosen_epoch == 3
        # The kept weights are those of epoch 3, not of the last epoch.
        kept_embeddings = encode(encoder_from_state(trained), holdout, "cpu")
        np.testing.assert_allclose(kept_embeddings, recorded[3][1], atol=1e-6)

    def test_checkpoint_epochs_default(self):
        assert AutoencoderConfig(epochs=160).checkpoint_epochs() == list(range(5, 161, 5))
        assert AutoencoderConfig(epochs=7, checkpoint_interval=3).checkpoint_epochs() == [3, 6, 7]


@pytest.fixture(scope="module")
def trained(split):  # noqa: ANN001, ANN201
    train, holdout = split
    weights = resolve_block_weights("inverse_variance", LAYOUT, train)
    proxy = label_free_proxy(train, holdout, LAYOUT, seed=0)
    config = AutoencoderConfig(dimensions=8, epochs=3, seed=11, hidden_width=256, checkpoint_interval=1)
    return train_autoencoder(train, holdout, LAYOUT, config, weights, proxy.score, LoggingReporter())


class TestOnnxExport:
    @pytest.mark.parametrize("name", CONDITIONINGS)
    def test_onnxruntime_matches_torch(self, trained, split, name):
        train, holdout = split
        conditioning = fit_conditioning(name, encode(encoder_from_state(trained), train, "cpu"))
        compressor = OnnxCompressor(export(trained, conditioning, train), "test")
        runtime = compressor.compress(holdout)
        assert runtime.shape == (holdout.shape[0], 8)
        assert np.max(np.abs(runtime - torch_reference(trained, conditioning, holdout))) <= 1e-5

    def test_conditionings_transform_training_embeddings(self, trained, split):
        train, _ = split
        embeddings = encode(encoder_from_state(trained), train, "cpu").astype(np.float64)
        rotated = fit_conditioning("pca_rotated", embeddings).apply(embeddings)
        whitened = fit_conditioning("whitened", embeddings).apply(embeddings)
        rotated_covariance = np.cov(rotated, rowvar=False)
        np.testing.assert_allclose(rotated.mean(axis=0), 0.0, atol=1e-4)
        assert np.max(np.abs(rotated_covariance - np.diag(np.diag(rotated_covariance)))) < 1e-4
        assert np.all(np.diff(np.diag(rotated_covariance)) <= 1e-6)
        np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(8), atol=1e-3)

    def test_metadata_and_names(self, trained, split):
        train, _ = split
        compressor = OnnxCompressor(export(trained, fit_conditioning("as_trained", train[:, :8]), train), "test")
        assert compressor.kind == "autoencoder"
        assert compressor.input_name == "features"
        assert compressor.session.get_outputs()[0].name == "embedding"
        assert (compressor.input_width, compressor.output_width) == (192, 8)
        assert json.loads(compressor.metadata["fusedeo_layout"]) == LAYOUT
        assert compressor.metadata["fusedeo_encoder_fingerprint"] == "f" * 64

    def test_layout_mismatch_names_both(self, trained, split):
        train, _ = split
        compressor = OnnxCompressor(export(trained, fit_conditioning("as_trained", train[:, :8]), train), "ae.onnx")
        other = [{"name": "alpha", "channels": 64, "seasons": 2}, {"name": "beta", "channels": 64, "seasons": 1}]
        with pytest.raises(LayoutMismatchError, match=r"was made for the fused layout .*\"channels\": 32.* but "
                                                      r"this run's layout is .*\"channels\": 64, \"seasons\": 2"):
            compressor.check_layout(other)
        with pytest.raises(LayoutMismatchError, match=r"takes fused vectors of width 192, but the selected "
                                                      r"encoders give width 64"):
            compressor.check_layout([{"name": "beta", "channels": 64, "seasons": 1}])

    def test_other_encoder_fingerprint_rejected(self, trained, split):
        train, _ = split
        compressor = OnnxCompressor(export(trained, fit_conditioning("as_trained", train[:, :8]), train), "ae.onnx")
        compressor.check_encoder_fingerprint("f" * 64)
        with pytest.raises(LayoutMismatchError, match=r"fitted encoder parts ffffffffffffffff, but this run's "
                                                      r"encoders have 0123456789abcdef"):
            compressor.check_encoder_fingerprint("0123456789abcdef" * 4)


class TestDeterminism:
    def run(self, split, seed):  # noqa: ANN001, ANN201
        train, holdout = split
        weights = resolve_block_weights("equal", LAYOUT, train)
        config = AutoencoderConfig(dimensions=8, epochs=2, seed=seed, hidden_width=256, checkpoint_interval=1)
        trained = train_autoencoder(train, holdout, LAYOUT, config, weights,
                                    label_free_proxy(train, holdout, LAYOUT, 0).score, LoggingReporter())
        conditioning = fit_conditioning("pca_rotated", encode(encoder_from_state(trained), train, "cpu"))
        return export(trained, conditioning, train)

    def test_same_seed_same_bytes(self, split):
        assert self.run(split, 21) == self.run(split, 21)

    def test_other_seed_other_weights(self, split):
        assert self.run(split, 21) != self.run(split, 22)


class TestBlockWeights:
    def test_inverse_variance_balances_blocks(self, split):
        train, _ = split
        weights = resolve_block_weights("inverse_variance", LAYOUT, train)
        variance_alpha = float(np.var(train[:, :128], axis=0).mean())
        variance_beta = float(np.var(train[:, 128:], axis=0).mean())
        assert weights["alpha"] * variance_alpha == pytest.approx(weights["beta"] * variance_beta, rel=1e-6)
        assert np.mean(list(weights.values())) == pytest.approx(1.0)

    def test_given_weights_need_every_block(self, split):
        train, _ = split
        assert resolve_block_weights({"alpha": 2.0, "beta": 0.5}, LAYOUT, train) == {"alpha": 2.0, "beta": 0.5}
        with pytest.raises(InputError, match=r"weights are given for \['alpha'\], but the fused blocks are "
                                             r"\['alpha', 'beta'\]"):
            resolve_block_weights({"alpha": 2.0}, LAYOUT, train)


class TestRidgeProxy:
    def test_linear_target_scores_near_one(self):
        rng = np.random.default_rng(0)
        embeddings = rng.normal(size=(300, 12))
        target = embeddings @ rng.normal(size=(12, 1))
        task = ProxyTask("linear", "regression", np.arange(200), np.arange(100), target[:200], target[200:])
        proxy = RidgeProxy("labels", [task])
        assert proxy.score(embeddings[:200], embeddings[200:]) > 0.99

    def test_unrelated_target_scores_near_zero(self):
        rng = np.random.default_rng(0)
        embeddings = rng.normal(size=(300, 12))
        target = rng.normal(size=(300, 1))
        task = ProxyTask("noise", "regression", np.arange(200), np.arange(100), target[:200], target[200:])
        assert RidgeProxy("labels", [task]).score(embeddings[:200], embeddings[200:]) < 0.1

    def test_separable_classes_score_f1_one(self):
        rng = np.random.default_rng(1)
        classes = rng.integers(0, 3, size=(300, 1)).astype(float)
        # Each class sits 6 standard deviations along its own axis.
        embeddings = rng.normal(size=(300, 6)) + 6.0 * np.eye(6)[classes[:, 0].astype(int)]
        task = ProxyTask("classes", "classification", np.arange(200), np.arange(100), classes[:200], classes[200:])
        assert RidgeProxy("labels", [task]).score(embeddings[:200], embeddings[200:]) > 0.95


class TestLabelFiles:
    def test_reads_tasks_and_skips_empty_labels(self, tmp_path):
        (tmp_path / "biomass__regression.csv").write_text("id,label\na/0_0,1.5\na/0_1,\na/0_2,3\n")
        (tmp_path / "crop__classification.csv").write_text("id,label\na/0_0,1\n")
        tasks = read_label_tasks(tmp_path)
        assert tasks == [("biomass", "regression", {"a/0_0": 1.5, "a/0_2": 3.0}),
                         ("crop", "classification", {"a/0_0": 1.0})]

    def test_bad_file_name(self, tmp_path):
        (tmp_path / "biomass.csv").write_text("id,label\na/0_0,1.5\n")
        with pytest.raises(InputError, match=r"LABELS_FOLDER: label file 'biomass.csv' is not named "
                                             r"<task>__<type>.csv with type regression or classification"):
            read_label_tasks(tmp_path)

    def test_missing_label_column(self, tmp_path):
        (tmp_path / "biomass__regression.csv").write_text("id,value\na/0_0,1.5\n")
        with pytest.raises(InputError, match=r"has columns \['id', 'value'\]; expected id and label"):
            read_label_tasks(tmp_path)


class TestTrainingChecks:
    def test_export_check_rejects_other_graph(self, trained, split):
        from fusedeo.errors import ModelFileError
        from fusedeo.models.compressor_training import _check_export

        train, holdout = split
        embeddings = encode(encoder_from_state(trained), train, "cpu")
        model_bytes = export(trained, fit_conditioning("as_trained", embeddings), train)
        with pytest.raises(ModelFileError, match=r"The exported compressor differs from the trained model by "
                                                 r".* the ONNX export is wrong"):
            _check_export(model_bytes, trained, fit_conditioning("whitened", embeddings), holdout, LoggingReporter())

    def test_split_needs_three_rows_each(self):
        from fusedeo.models.compressor_training import split_rows

        train_rows, holdout_rows = split_rows(20, 0.2, seed=1)
        assert (train_rows.size, holdout_rows.size) == (16, 4)
        assert sorted(np.concatenate([train_rows, holdout_rows]).tolist()) == list(range(20))
        with pytest.raises(InputError, match=r"FEATURES: 10 rows with HOLDOUT_FRACTION=0.2 give 8 training and 2 "
                                             r"held-out rows; each needs at least 3"):
            split_rows(10, 0.2, seed=1)

    def test_labels_of_other_ids_rejected(self):
        from fusedeo.models.compressor_proxy import labelled_proxy

        tasks = [("biomass", "regression", {"x/0_0": 1.0, "x/0_1": 2.0})]
        with pytest.raises(InputError, match=r"task 'biomass' labels 0 training and 0 held-out rows of the feature "
                                             r"stores; at least 3 of each are needed"):
            labelled_proxy(tasks, ["a/0_0", "a/0_1", "a/0_2"], ["a/1_0", "a/1_1", "a/1_2"])
