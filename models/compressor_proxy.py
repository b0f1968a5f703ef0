"""Label-free downstream proxy for choosing an autoencoder checkpoint: closed-form ridge probes.

Reconstruction error keeps falling long after downstream quality has peaked,
so checkpoints are scored by how well linear probes on the embeddings predict
targets. Without labels (with labels, see :mod:`.neuco_proxy`), the targets
come from the fused vectors themselves: the per-season mean of every block
and the leading principal components of every block. A probe is ridge
regression solved in closed form on the embeddings of the training split and
scored on the held-out split. R² over all targets measures how much of each
block a linear read-out of the embedding still recovers. A task may also be
a classification target, scored by the macro F1 of the one-vs-rest ridge
argmax.

Embeddings are divided by one global standard deviation over all values, as
the NeuCo-Bench evaluator standardises a submission (embed2scale/NeuCo-Bench,
``benchmark/data/embeddings.py``). The score therefore depends on how the
embedding dimensions are scaled and correlated (the output conditioning), not
only on the information they carry. Per-column centring changes nothing,
because the probes fit an intercept.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import import_optional

logger = logging.getLogger(__name__)

REGRESSION = "regression"
CLASSIFICATION = "classification"
TASK_TYPES = (REGRESSION, CLASSIFICATION)
# Ridge penalties, relative to the mean eigenvalue of the Gram matrix. Each
# target uses the penalty that scores best on the held-out split, so that no
# single penalty decides the proxy.
RELATIVE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)
PRINCIPAL_COMPONENTS_PER_BLOCK = 4
MIN_ROWS_PER_SPLIT = 3


@dataclass
class ProxyTask:
    """One probe target measured on the training and held-out rows.

    Attributes:
        name: Task name, for the report.
        task_type: ``"regression"`` or ``"classification"``.
        train_rows: Row indices into the training-split embeddings.
        holdout_rows: Row indices into the held-out-split embeddings.
        train_targets: ``(n_train, T)`` targets; for classification, class codes ``(n_train, 1)``.
        holdout_targets: ``(n_holdout, T)`` targets, likewise.
    """

    name: str
    task_type: str
    train_rows: np.ndarray
    holdout_rows: np.ndarray
    train_targets: np.ndarray
    holdout_targets: np.ndarray


@dataclass
class RidgeProxy:
    """Score embeddings by closed-form ridge probes on a fixed set of tasks.

    Attributes:
        kind: ``"labels"`` or ``"label-free"``.
        tasks: Probe targets.
        notes: How the targets were built, for the report.
    """

    kind: str
    tasks: list[ProxyTask]
    notes: list[str] = field(default_factory=list)

    def task_scores(self, train_embeddings: np.ndarray, holdout_embeddings: np.ndarray) -> dict[str, float]:
        """Return the held-out score of every task.

        Args:
            train_embeddings: ``(n_train, K)`` embeddings of the training split.
            holdout_embeddings: ``(n_holdout, K)`` embeddings of the held-out split.
        """
        scores = {}
        # Tasks on the same rows (all label-free ones) share one decomposition.
        bases: dict[tuple[int, int], _RidgeBasis] = {}
        for task in self.tasks:
            key = (id(task.train_rows), id(task.holdout_rows))
            if key not in bases:
                bases[key] = _decompose(train_embeddings[task.train_rows].astype(np.float64),
                                        holdout_embeddings[task.holdout_rows].astype(np.float64))
            scores[task.name] = _score_task(task, bases[key])
        return scores

    def score(self, train_embeddings: np.ndarray, holdout_embeddings: np.ndarray) -> float:
        """Return the mean held-out score over the tasks (higher is better)."""
        return float(np.mean(list(self.task_scores(train_embeddings, holdout_embeddings).values())))


@dataclass
class _RidgeBasis:
    """Eigendecomposition of the standardised training Gram matrix, shared by all targets on the same rows.

    Attributes:
        train: Standardised training embeddings ``(n_train, K)``.
        eigenvalues: Eigenvalues, clipped at 0.
        vectors: Eigenvectors, in sample space when ``dual``.
        cross: Held-out embeddings mapped onto the eigenvectors.
        dual: Whether the Gram matrix is ``X Xᵀ`` (fewer samples than dimensions) instead of ``Xᵀ X``.
    """

    train: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    cross: np.ndarray
    dual: bool


def _decompose(train: np.ndarray, holdout: np.ndarray) -> _RidgeBasis:
    """Standardise the embeddings and decompose the Gram matrix of the training split.

    Embeddings are centred by the training mean and divided by one global
    training standard deviation, so the relative scale of dimensions is kept.
    """
    mean = train.mean(axis=0)
    scale = float(np.sqrt(((train - mean) ** 2).mean()))
    scale = scale if scale > 0 else 1.0
    train, holdout = (train - mean) / scale, (holdout - mean) / scale
    samples, width = train.shape
    if samples < width:
        eigenvalues, vectors = np.linalg.eigh(train @ train.T)
        cross = holdout @ train.T @ vectors
    else:
        eigenvalues, vectors = np.linalg.eigh(train.T @ train)
        cross = holdout @ vectors
    return _RidgeBasis(train, np.clip(eigenvalues, 0.0, None), vectors, cross, samples < width)


def _ridge_predictions(basis: _RidgeBasis, targets: np.ndarray) -> list[np.ndarray]:
    """Return held-out predictions of ridge fits for every relative penalty.

    Each penalty costs one matrix product, because the decomposition is shared.
    """
    target_mean = targets.mean(axis=0)
    centred_targets = targets - target_mean
    if basis.dual:
        projected = basis.vectors.T @ centred_targets
    else:
        projected = basis.vectors.T @ (basis.train.T @ centred_targets)
    mean_eigenvalue = max(float(basis.eigenvalues.sum()) / basis.train.shape[1], 1e-12)
    predictions = []
    for relative in RELATIVE_PENALTIES:
        # Both forms predict H V (Λ + λI)⁻¹ Vᵀ(...): the dual w = Xᵀ(XXᵀ + λI)⁻¹y equals the primal one.
        coefficients = projected / (basis.eigenvalues + relative * mean_eigenvalue)[:, None]
        predictions.append(basis.cross @ coefficients + target_mean)
    return predictions


def _r2(truth: np.ndarray, predicted: np.ndarray, reference_mean: np.ndarray) -> np.ndarray:
    """Return R² per column, against the training mean so a constant guess scores 0."""
    residual = ((truth - predicted) ** 2).sum(axis=0)
    total = ((truth - reference_mean) ** 2).sum(axis=0)
    return 1.0 - residual / np.maximum(total, 1e-12)


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> float:
    """Return the macro F1 over ``classes``."""
    scores = []
    for value in classes:
        true_positive = float(np.sum((predicted == value) & (truth == value)))
        predicted_positive = float(np.sum(predicted == value))
        actual_positive = float(np.sum(truth == value))
        denominator = predicted_positive + actual_positive
        scores.append(2.0 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _score_task(task: ProxyTask, basis: _RidgeBasis) -> float:
    """Return the best held-out score of a task over the ridge penalties."""
    if task.task_type == REGRESSION:
        reference_mean = task.train_targets.mean(axis=0)
        candidates = _ridge_predictions(basis, task.train_targets)
        # Per target, the best penalty; R² below -1 is clipped so one wild target cannot dominate the mean.
        per_target = np.max([_r2(task.holdout_targets, prediction, reference_mean) for prediction in candidates],
                            axis=0)
        return float(np.mean(np.clip(per_target, -1.0, 1.0)))
    classes = np.unique(task.train_targets[:, 0])
    one_hot = (task.train_targets[:, :1] == classes[None, :]).astype(np.float64)
    candidates = _ridge_predictions(basis, one_hot)
    truth = task.holdout_targets[:, 0]
    return max(_macro_f1(truth, classes[np.argmax(prediction, axis=1)], np.unique(truth)) for prediction in candidates)


def label_free_proxy(train_features: np.ndarray, holdout_features: np.ndarray, layout: list[dict[str, Any]],
                     seed: int) -> RidgeProxy:
    """Build proxy targets from the fused vectors themselves.

    Per block: the mean over channels of every season, and the scores on the
    block's leading principal components (fitted on the training split).

    Args:
        train_features: ``(n_train, D)`` fused vectors of the training split.
        holdout_features: ``(n_holdout, D)`` fused vectors of the held-out split.
        layout: Fused blocks, in order.
        seed: Seed of the randomised SVD.
    """
    extmath = import_optional("sklearn.utils.extmath", "computing label-free proxy targets")
    train_rows = np.arange(train_features.shape[0])
    holdout_rows = np.arange(holdout_features.shape[0])
    tasks, notes = [], []
    start = 0
    for block in layout:
        width = block["channels"] * block["seasons"]
        train_block = train_features[:, start:start + width].astype(np.float64)
        holdout_block = holdout_features[:, start:start + width].astype(np.float64)
        start += width
        # Index c * seasons + t: the seasons of one channel are adjacent.
        train_means = train_block.reshape(-1, block["channels"], block["seasons"]).mean(axis=1)
        holdout_means = holdout_block.reshape(-1, block["channels"], block["seasons"]).mean(axis=1)
        tasks.append(ProxyTask(f"{block['name']} season means", REGRESSION, train_rows, holdout_rows,
                               train_means, holdout_means))
        components = min(PRINCIPAL_COMPONENTS_PER_BLOCK, train_block.shape[0] - 1, width)
        if components >= 1:
            centre = train_block.mean(axis=0)
            _, _, basis = extmath.randomized_svd(train_block - centre, components, random_state=seed)
            tasks.append(ProxyTask(f"{block['name']} principal components", REGRESSION, train_rows, holdout_rows,
                                   (train_block - centre) @ basis.T, (holdout_block - centre) @ basis.T))
        notes.append(f"{block['name']}: {block['seasons']} season mean(s) and {components} leading principal "
                     "component(s) as targets.")
    return RidgeProxy("label-free", tasks, notes)
