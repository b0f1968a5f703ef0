"""The neuco and ridge probes: splits, fold metrics, agreement with per-split training, determinism."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

from fusedeo.neuco import protocol
from fusedeo.neuco.linear_probe import draw_initial_state, probe_inputs, train_linear_probes
from fusedeo.neuco.ridge_probe import RELATIVE_ALPHAS, fit_ridge_splits
from fusedeo.reporting import LoggingReporter


def _regression_data(samples=300, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((samples, dim)).astype(np.float32)
    labels = features[:, 0] * 0.8 - features[:, 1] * 0.4 + rng.standard_normal(samples) * 0.3
    return features, (labels - labels.min()) / (labels.max() - labels.min())


@pytest.mark.parametrize("sample_count", [20, 105, 5000])
def test_shuffle_splits_equal_scikit_learn(sample_count):
    model_selection = pytest.importorskip("sklearn.model_selection")
    splitter = model_selection.ShuffleSplit(n_splits=5, test_size=0.1, random_state=42)
    train, test = protocol.shuffle_splits(sample_count, 5)
    for fold, (expected_train, expected_test) in enumerate(splitter.split(np.zeros((sample_count, 1)))):
        np.testing.assert_array_equal(train[fold], expected_train)
        np.testing.assert_array_equal(test[fold], expected_test)


def test_shuffle_splits_hold_out_ten_percent():
    train, test = protocol.shuffle_splits(105, 4)
    assert train.shape == (4, 94)
    assert test.shape == (4, 11)
    for train_rows, test_rows in zip(train, test, strict=True):
        assert sorted(np.concatenate([train_rows, test_rows])) == list(range(105))


def test_f1_threshold_is_logit_above_zero():
    targets = np.array([[1.0, 0.0, 1.0, 0.0]])
    # Predicted 1 only for logits strictly above 0: tp 1 (0.1), fp 1 (0.2), fn 1 (0.0).
    assert protocol.f1_scores(targets, np.array([[0.1, -0.1, 0.0, 0.2]]))[0] == pytest.approx(0.5)
    # Logits inside [0, 1] are still thresholded at 0, not at 0.5.
    assert protocol.f1_scores(np.array([[1.0, 1.0]]), np.array([[0.3, 0.4]]))[0] == pytest.approx(1.0)


def test_f1_without_positives_is_zero():
    assert protocol.f1_scores(np.array([[0.0, 0.0]]), np.array([[-1.0, -2.0]]))[0] == 0.0


def test_r2_scores_per_fold():
    targets = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    predictions = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]])
    result = protocol.r2_scores(targets, predictions)
    assert result[0] == pytest.approx(0.5)
    assert np.isnan(result[1])


def _reference_style_scores(features, labels, task_type, train, test, settings_epochs=10):
    """Train each split alone with nn.Linear, torch AdamW and shuffled DataLoaders, as NeuCo-Bench describes."""
    torch.manual_seed(protocol.SEED)
    dataset = TensorDataset(torch.from_numpy(features), torch.tensor(labels, dtype=torch.float32))
    loss_function = torch.nn.BCEWithLogitsLoss() if task_type == "classification" else torch.nn.MSELoss()
    best_scores = []
    for train_rows, test_rows in zip(train, test, strict=True):
        train_loader = DataLoader(dataset, batch_size=64, sampler=SubsetRandomSampler(train_rows))
        test_loader = DataLoader(dataset, batch_size=64, sampler=SubsetRandomSampler(test_rows))
        model = torch.nn.Linear(features.shape[1], 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        best = -np.inf
        for _ in range(settings_epochs):
            for batch, batch_targets in train_loader:
                loss = loss_function(model(batch).view(-1), batch_targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                pairs = [(model(batch).view(-1), batch_targets) for batch, batch_targets in test_loader]
            logits = torch.cat([pair[0] for pair in pairs]).numpy()[None]
            targets = torch.cat([pair[1] for pair in pairs]).numpy()[None]
            best = max(best, protocol.fold_scores(task_type, targets, logits)[0])
        best_scores.append(best)
    return np.array(best_scores)


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_batched_probe_matches_training_each_split_alone(task_type):
    features, labels = _regression_data()
    if task_type == "classification":
        labels = (labels > 0.5).astype(np.float64)
    train, test = protocol.shuffle_splits(len(labels), 5)
    generator = torch.Generator().manual_seed(protocol.SEED)
    state = draw_initial_state(generator, 5, features.shape[1], train.shape[1], test.shape[1])
    result = train_linear_probes(probe_inputs(features), labels, task_type, train, test, state, LoggingReporter("test"))
    expected = _reference_style_scores(features, labels, task_type, train, test)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-5)
    assert result.epoch_scores.shape == (10, 5)
    assert set(result.best_epochs) <= set(range(1, 11))


def test_batched_probe_is_deterministic():
    features, labels = _regression_data()
    train, test = protocol.shuffle_splits(len(labels), 4)
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(protocol.SEED)
        state = draw_initial_state(generator, 4, features.shape[1], train.shape[1], test.shape[1])
        runs.append(train_linear_probes(probe_inputs(features), labels, "regression", train, test, state, LoggingReporter("t")))
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    np.testing.assert_array_equal(runs[0].epoch_scores, runs[1].epoch_scores)


def test_ridge_matches_scikit_learn_at_the_chosen_penalty():
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    features, labels = _regression_data(samples=250, dim=20)
    train, test = protocol.shuffle_splits(len(labels), 4)
    (result,) = fit_ridge_splits(features, [labels], ["regression"], train, test, LoggingReporter("t"))
    for fold, (train_rows, test_rows) in enumerate(zip(train, test, strict=True)):
        model = sklearn_linear.Ridge(alpha=result.alphas[fold]).fit(features[train_rows], labels[train_rows])
        expected = protocol.r2_scores(labels[test_rows][None], model.predict(features[test_rows])[None])[0]
        assert result.scores[fold] == pytest.approx(expected, abs=1e-4)
    assert set(result.relative_alphas) <= set(RELATIVE_ALPHAS)


def test_ridge_penalty_minimises_gcv_on_training_rows():
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    features, labels = _regression_data(samples=200, dim=40, seed=4)
    train, test = protocol.shuffle_splits(len(labels), 2)
    (result,) = fit_ridge_splits(features, [labels], ["regression"], train, test, LoggingReporter("t"))
    centred = features - features.mean(axis=0)
    eigenvalues = np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred)
    fraction = train.shape[1] / len(labels)
    for fold, train_rows in enumerate(train):
        criteria = []
        for relative in RELATIVE_ALPHAS:
            alpha = relative * eigenvalues.mean()
            model = sklearn_linear.Ridge(alpha=alpha).fit(features[train_rows], labels[train_rows])
            residual = ((labels[train_rows] - model.predict(features[train_rows])) ** 2).sum()
            freedom = 1 + (eigenvalues * fraction / (eigenvalues * fraction + alpha)).sum()
            criteria.append(len(train_rows) * residual / (len(train_rows) - freedom) ** 2)
        assert result.relative_alphas[fold] == RELATIVE_ALPHAS[int(np.argmin(criteria))]


def test_ridge_classifier_separable_classes():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((200, 6)).astype(np.float32)
    labels = (features[:, 2] > 0).astype(np.float64)
    train, test = protocol.shuffle_splits(200, 3)
    regression, classification = fit_ridge_splits(
        features, [features[:, 2].astype(np.float64), labels], ["regression", "classification"], train, test,
        LoggingReporter("t"),
    )
    assert classification.scores.mean() > 0.9
    assert regression.scores.min() > 0.99


@pytest.mark.parametrize(("row_count", "vector_count"), [(1, 1), (7, 13), (64, 4), (130, 26)])
def test_rows_dot_equals_matmul(row_count, vector_count):
    from fusedeo.neuco.linalg_kernel import rows_dot

    rng = np.random.default_rng(row_count)
    rows = rng.standard_normal((row_count, 37)).astype(np.float32)
    vectors = rng.standard_normal((vector_count, 37)).astype(np.float32)
    out = np.full((vector_count, row_count), np.nan, dtype=np.float32)
    rows_dot(rows, vectors, out)
    np.testing.assert_allclose(out, vectors.astype(np.float64) @ rows.T, rtol=1e-5, atol=1e-5)


def test_matrix_product_into_wider_array():
    from fusedeo.neuco.linalg_kernel import matrix_product

    rng = np.random.default_rng(3)
    left = rng.standard_normal((150, 20)).astype(np.float32)
    right = rng.standard_normal((20, 9)).astype(np.float32)
    wider = np.ones((150, 10), dtype=np.float32)
    matrix_product(left, np.ascontiguousarray(right.T), wider[:, :9])
    np.testing.assert_allclose(wider[:, :9], left.astype(np.float64) @ right, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(wider[:, 9], 1.0)


def test_solve_woodbury_equals_direct_solve():
    from fusedeo.neuco.linalg_kernel import solve_woodbury

    rng = np.random.default_rng(5)
    inputs = rng.standard_normal((30, 50)).astype(np.float32)
    # Diagonals large enough that every system matrix is positive definite.
    inverse_diagonal = (1.0 / rng.uniform(200.0, 500.0, (3, 50))).astype(np.float32)
    right_side = rng.standard_normal((3, 30)).astype(np.float32)
    solution, projected, residual, worst = solve_woodbury(
        inputs, np.ascontiguousarray(inputs.T), inverse_diagonal, right_side, 1e-6, 200
    )
    for system in range(3):
        matrix = np.eye(30) - (inputs * inverse_diagonal[system]).astype(np.float64) @ inputs.T
        expected = np.linalg.solve(matrix, right_side[system])
        np.testing.assert_allclose(solution[system], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(projected[system], inputs.T.astype(np.float64) @ solution[system], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(residual[system], right_side[system] - matrix @ solution[system], atol=1e-4)
    assert worst <= 1e-6


def test_solve_woodbury_reports_unfinished_solve():
    from fusedeo.neuco.linalg_kernel import solve_woodbury

    rng = np.random.default_rng(6)
    inputs = rng.standard_normal((30, 50)).astype(np.float32)
    inverse_diagonal = np.full((1, 50), 1.0 / 250.0, dtype=np.float32)
    right_side = rng.standard_normal((1, 30)).astype(np.float32)
    *_, worst = solve_woodbury(inputs, np.ascontiguousarray(inputs.T), inverse_diagonal, right_side, 1e-6, 1)
    assert worst > 1e-6


def test_ridge_centres_in_place_on_request():
    features, labels = _regression_data(samples=120, dim=8)
    original = features.copy()
    train, test = protocol.shuffle_splits(len(labels), 3)
    (copied,) = fit_ridge_splits(features, [labels], ["regression"], train, test, LoggingReporter("t"))
    np.testing.assert_array_equal(features, original)
    (overwritten,) = fit_ridge_splits(
        features, [labels], ["regression"], train, test, LoggingReporter("t"), overwrite_features=True
    )
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_array_equal(overwritten.scores, copied.scores)
