"""The NeuCo-Bench cross-validation protocol: constants, shuffle splits and fold metrics.

Values are those of NeuCo-Bench's ``configs/sample_config_linear.yaml`` and
``benchmark/evaluation/evaluation.py`` (github.com/embed2scale/NeuCo-Bench).
"""

import math

import numpy as np

SEED = 42
"""Seed of the shuffle splits and of the probe's random draws."""

TEST_FRACTION = 0.1
"""Fraction of a task's samples held out in each split."""

DEFAULT_K_FOLDS = 40
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-3
ADAMW_WEIGHT_DECAY = 0.01
"""torch.optim.AdamW's default weight decay, which the reference leaves unchanged."""

PROBES: tuple[str, ...] = ("neuco", "ridge")
"""Probe modes: the reference's AdamW-trained linear layer, and closed-form ridge."""


def shuffle_splits(sample_count: int, k_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the train and test rows of NeuCo-Bench's shuffle splits.

    NeuCo-Bench uses scikit-learn's ``ShuffleSplit(n_splits=k_folds,
    test_size=0.1, random_state=42)``. That draws, per split,
    ``permutation(n)`` from ``numpy.random.RandomState(42)`` and holds out its
    first ``ceil(0.1 n)`` entries (scikit-learn 1.x,
    ``sklearn/model_selection/_split.py``). The same draws are made here,
    which spares importing scikit-learn; a test compares both.

    Returns:
        Train rows ``(k_folds, train_size)`` and test rows
        ``(k_folds, test_size)``, int64 indices into the task's samples.
    """
    test_size = math.ceil(TEST_FRACTION * sample_count)
    generator = np.random.RandomState(SEED)
    permutations = np.stack([generator.permutation(sample_count) for _ in range(k_folds)]).astype(np.int64)
    return permutations[:, test_size:], permutations[:, :test_size]


def r2_scores(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return R² per row of ``(folds, samples)`` arrays; NaN where the targets are constant."""
    targets = targets.astype(np.float64)
    residual = ((targets - predictions.astype(np.float64)) ** 2).sum(axis=-1)
    total = ((targets - targets.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), np.nan)


def f1_scores(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Return the binary F1 score per row of ``(folds, samples)`` arrays, predicting 1 where logit > 0.

    A fold with no positive target and no positive prediction scores 0, as
    in torchmetrics and scikit-learn.

    NOTE: the reference scores with torchmetrics' ``BinaryF1Score``, which
    applies a sigmoid only when some prediction lies outside [0, 1]. When all
    held-out logits of a split lie in [0, 1] it thresholds them at 0.5, not
    at 0, so that rare split can score differently here.
    """
    predicted = logits > 0
    actual = targets > 0.5
    true_positive = (predicted & actual).sum(axis=-1)
    false_positive = (predicted & ~actual).sum(axis=-1)
    false_negative = (~predicted & actual).sum(axis=-1)
    denominator = 2 * true_positive + false_positive + false_negative
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def fold_scores(task_type: str, targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return R² (regression) or F1 at logit > 0 (classification) per fold."""
    if task_type == "classification":
        return f1_scores(targets, predictions)
    return r2_scores(targets, predictions)
