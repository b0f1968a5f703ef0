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
from fusedeo.models.compressor_proxy import ProxyTask, RidgeProxy, label_free_proxy
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


def write_labels(folder, name: str, labels: dict[str, float]) -> None:  # noqa: ANN001
    lines = ["id,label"] + [f"{identifier},{value!r}" for identifier, value in labels.items()]
    (folder / name).write_text("\n".join(lines) + "\n")


class TestNeucoProxy:
    def test_score_is_the_evaluators_mean_q(self, tmp_path):
        """The proxy scores what the NeuCo-Bench evaluator scores from a CSV of the same embeddings."""
        from fusedeo.models.neuco_proxy import neuco_proxy
        from fusedeo.neuco.evaluate import EvaluationConfig, evaluate

        rng = np.random.default_rng(4)
        embeddings = rng.normal(size=(90, 12)).astype(np.float32) * 3.0 + 1.0
        ids = [f"a/{row // 10}_{row % 10}" for row in range(90)]
        labels = tmp_path / "labels"
        labels.mkdir()
        # Every fifth patch is unlabelled, so the standardisation must use the labelled rows only.
        labelled = [row for row in range(90) if row % 5]
        write_labels(labels, "signal__regression.csv",
                     {ids[row]: float(embeddings[row, :3].sum() + 0.3 * rng.normal()) for row in labelled})
        write_labels(labels, "sign__classification.csv",
                     {ids[row]: float(embeddings[row, 4] > 1.0) for row in labelled})
        train, holdout = slice(0, 70), slice(70, 90)
        proxy = neuco_proxy(labels, ids[train], ids[holdout], LoggingReporter(), k_folds=6)
        scores = proxy.task_scores(embeddings[train], embeddings[holdout])

        csv_path = tmp_path / "embeddings.csv"
        rows = [",".join(["id", *map(str, range(12))])]
        rows += [",".join([ids[row], *(repr(float(value)) for value in embeddings[row])]) for row in range(90)]
        csv_path.write_text("\n".join(rows) + "\n")
        result = evaluate(EvaluationConfig(csv_path, labels, tmp_path / "results", k_folds=6), LoggingReporter())
        expected = {score.task_name: score.q for score in result.task_scores}
        assert sorted(scores) == ["sign", "signal"]
        for task in scores:
            assert scores[task] == pytest.approx(expected[task], rel=1e-9)
        assert proxy.score(embeddings[train], embeddings[holdout]) == pytest.approx(np.mean(list(scores.values())))
        assert any("72 labelled patches (16 of them held out from training), 6 splits" in note for note in proxy.notes)

    def test_probe_warning_forwarded_once(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        rng = np.random.default_rng(5)
        ids = [f"a/0_{col}" for col in range(30)]
        write_labels(tmp_path, "biomass__regression.csv", {identifier: float(rng.normal()) for identifier in ids})
        reporter = LoggingReporter()
        proxy = neuco_proxy(tmp_path, ids[:24], ids[24:], reporter, k_folds=3)
        embeddings = rng.normal(size=(30, 4)).astype(np.float32)
        for _ in range(3):
            proxy.score(embeddings[:24], embeddings[24:])
        warnings = [text for level, text in reporter.messages if level == "warning"]
        assert len([text for text in warnings if "barely trained" in text]) == 1

    def test_skips_empty_labels(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        ids = [f"a/0_{col}" for col in range(30)]
        labels = {identifier: float(index) for index, identifier in enumerate(ids)}
        write_labels(tmp_path, "biomass__regression.csv", labels)
        text = (tmp_path / "biomass__regression.csv").read_text().replace("a/0_3,3.0", "a/0_3,")
        (tmp_path / "biomass__regression.csv").write_text(text)
        proxy = neuco_proxy(tmp_path, ids[:25], ids[25:], LoggingReporter())
        assert [task.name for task in proxy.tasks] == ["biomass"]
        assert len(proxy.tasks[0].rows) == 29

    def test_bad_file_name(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        (tmp_path / "biomass.csv").write_text("id,label\na/0_0,1.5\n")
        with pytest.raises(InputError, match=r"LABELS_FOLDER: labels file .*biomass.csv: the name must be "
                                             r"<task>__<type>.csv"):
            neuco_proxy(tmp_path, ["a/0_0"], ["a/0_1"], LoggingReporter())

    def test_missing_label_column(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        (tmp_path / "biomass__regression.csv").write_text("id,value\na/0_0,1.5\n")
        with pytest.raises(InputError, match=r"LABELS_FOLDER: labels file .*: no 'label' column"):
            neuco_proxy(tmp_path, ["a/0_0"], ["a/0_1"], LoggingReporter())

    def test_labels_of_other_ids_rejected(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        write_labels(tmp_path, "biomass__regression.csv", {"x/0_0": 1.0, "x/0_1": 2.0})
        with pytest.raises(InputError, match=r"LABELS_FOLDER: the label files share no ids with the feature stores "
                                             r"\(store ids such as \['a/0_0', 'a/0_1', 'a/1_0'\]; first ids of "
                                             r"biomass__regression.csv: \['x/0_0', 'x/0_1'\]\)"):
            neuco_proxy(tmp_path, ["a/0_0", "a/0_1"], ["a/1_0"], LoggingReporter())

    def test_too_few_labelled_patches_rejected(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        ids = [f"a/0_{col}" for col in range(30)]
        write_labels(tmp_path, "biomass__regression.csv", {identifier: 1.0 * col for col, identifier in
                                                           enumerate(ids[:12])})
        with pytest.raises(InputError, match=r"LABELS_FOLDER: no task in .* has at least 20 labelled patches"):
            neuco_proxy(tmp_path, ids[:20], ids[20:], LoggingReporter())

    def test_multiclass_classification_rejected(self, tmp_path):
        from fusedeo.models.neuco_proxy import neuco_proxy

        ids = [f"a/0_{col}" for col in range(30)]
        write_labels(tmp_path, "crop__classification.csv", {identifier: float(col % 3) for col, identifier in
                                                            enumerate(ids)})
        with pytest.raises(InputError, match=r"LABELS_FOLDER: labels file .*crop__classification.csv: a "
                                             r"classification task needs labels 0 and 1"):
            neuco_proxy(tmp_path, ids[:20], ids[20:], LoggingReporter())


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
