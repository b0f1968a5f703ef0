"""The ``ridge`` probe: closed-form ridge models on NeuCo-Bench's splits, sharing one factorisation.

Each split's model is ridge regression with an unpenalised intercept, fitted
on the split's training rows. Classification tasks fit the same model to
targets -1 and +1 (a ridge classifier) and predict class 1 where the output
is above 0. The penalty of each split is chosen among :data:`RELATIVE_ALPHAS`
by generalised cross-validation (GCV) on that split's training rows.

One eigendecomposition serves all splits and penalties. With the task's
centred embeddings ``X = Z Vᵀ`` in the eigenbasis of ``XᵀX`` and a column of
ones appended, the penalised Gram matrix of all rows is the diagonal
``D = diag(s + alpha, n)``. A split's training Gram matrix is
``D - ZTᵀ ZT`` for its held-out rows ``ZT``, so by the Woodbury identity its
solution needs only the ``(test_size, test_size)`` system
``(I - ZT D⁻¹ ZTᵀ) x = ZT D⁻¹ b``, whose solution ``x`` is also the split's
held-out prediction. Compiled conjugate gradients (:mod:`.linalg_kernel`)
solve it for all penalties of a split at once, one split after the other,
so that the split's held-out rows stay in the CPU cache while they are
multiplied about fifteen times.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import RunCancelledError
from ..reporting import Reporter
from .protocol import fold_scores

RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(10.0**exponent) for exponent in np.arange(-4.0, 2.01, 0.5))
"""Penalties tried, as multiples of the mean eigenvalue of the task's ``XᵀX``."""

CG_TOLERANCE = 1e-5
"""Relative residual at which the conjugate-gradient solves stop."""

CG_MAX_ITERATIONS = 200


@dataclass(frozen=True)
class RidgeResults:
    """Scores of every split of one task."""

    scores: np.ndarray  # (folds,) held-out R² or F1
    alphas: np.ndarray  # (folds,) chosen penalty, in units of XᵀX
    relative_alphas: np.ndarray  # (folds,) chosen penalty / mean eigenvalue of XᵀX


def fit_ridge_splits(
    features: np.ndarray,
    labels: list[np.ndarray],
    task_types: list[str],
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    reporter: Reporter,
    overwrite_features: bool = False,
) -> list[RidgeResults]:
    """Fit a ridge model per task and split, choosing its penalty on the split's training rows.

    Tasks passed together share the samples, the splits and all the
    factorisation work; only their targets differ.

    Args:
        features: Standardised embeddings of the samples ``(samples, dim)``.
        labels: Targets ``(samples,)`` per task: normalised values, or 0 and 1.
        task_types: ``"regression"`` (scored by R²) or ``"classification"``
            (scored by F1 at output > 0) per task.
        train_rows: Training rows per split ``(folds, train_size)``.
        test_rows: Held-out rows per split ``(folds, test_size)``.
        reporter: Receives a warning if a solve does not converge; checked
            for cancellation between splits.
        overwrite_features: Centre ``features`` in place when it is a
            C-contiguous float32 array, which saves a copy.

    Returns:
        The held-out score and the chosen penalty per split, per task.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    from .linalg_kernel import matrix_product, symmetric_eigh

    sample_count, dim = features.shape
    train_size = train_rows.shape[1]
    targets = np.stack(
        [
            2.0 * task_labels - 1.0 if task_type == "classification" else task_labels
            for task_labels, task_type in zip(labels, task_types, strict=True)
        ],
        axis=1,
    ).astype(np.float32)  # (samples, tasks)

    # Eigenbasis of the centred embeddings; the ones column then stays orthogonal to Z.
    column_means = features.mean(axis=0, dtype=np.float64).astype(np.float32)
    if overwrite_features and features.dtype == np.float32 and features.flags.c_contiguous:
        centred = np.subtract(features, column_means, out=features)
    else:
        centred = np.ascontiguousarray(features - column_means, dtype=np.float32)
    gram = centred.T @ centred  # numpy computes a product with its own transpose as a symmetric rank-k update
    eigenvalues, eigenvectors = symmetric_eigh(gram)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    rotated = np.empty((sample_count, dim + 1), dtype=np.float32)
    matrix_product(centred, np.ascontiguousarray(eigenvectors.T), rotated[:, :dim])
    rotated[:, dim] = 1.0
    del centred, gram
    basis = _Basis(rotated=rotated, eigenvalues=eigenvalues, targets=targets, train_size=train_size)

    best_predictions = np.empty((len(test_rows), len(labels), test_rows.shape[1]), dtype=np.float32)
    chosen = np.empty((len(test_rows), len(labels)), dtype=np.int64)
    worst_residual = 0.0
    for fold, held_out in enumerate(test_rows):
        predictions, criterion, residual = basis.solve_split(held_out)
        chosen[fold] = criterion.argmin(axis=1)
        best_predictions[fold] = predictions[np.arange(len(labels)), chosen[fold]]
        worst_residual = max(worst_residual, residual)
        if reporter.is_canceled():
            raise RunCancelledError("Evaluation cancelled while fitting ridge probes.")
    if worst_residual > CG_TOLERANCE:
        reporter.warning(
            f"Ridge probe: a conjugate-gradient solve stopped with a relative residual of {worst_residual:.1e}, "
            f"above the tolerance of {CG_TOLERANCE:.0e}, after {CG_MAX_ITERATIONS} iterations or when its "
            "curvature was no longer positive. Scores may be slightly off."
        )
    return [
        RidgeResults(
            scores=fold_scores(task_type, task_labels[test_rows], best_predictions[:, task]),
            alphas=basis.alphas[chosen[:, task]].astype(np.float64),
            relative_alphas=np.asarray(RELATIVE_ALPHAS)[chosen[:, task]],
        )
        for task, (task_labels, task_type) in enumerate(zip(labels, task_types, strict=True))
    ]


class _Basis:
    """The tasks' data in the eigenbasis, with what every split's solve shares."""

    def __init__(self, rotated: np.ndarray, eigenvalues: np.ndarray, targets: np.ndarray, train_size: int) -> None:
        """Keep ``rotated`` ``(samples, dim + 1)`` and ``targets`` ``(samples, tasks)``."""
        self.rotated = rotated
        self.targets = targets
        self.train_size = train_size
        sample_count = len(rotated)
        scale = float(eigenvalues.mean()) or 1.0
        self.alphas = np.asarray(RELATIVE_ALPHAS, dtype=np.float32) * np.float32(scale)
        task_count = targets.shape[1]
        # Inverse of the penalised Gram diagonal, one row per task and penalty, task-major
        # (tasks * alphas, dim + 1). The intercept is not penalised.
        diagonal = np.concatenate(
            [
                eigenvalues[None, :].astype(np.float32) + self.alphas[:, None],
                np.full((len(self.alphas), 1), float(sample_count), dtype=np.float32),
            ],
            axis=1,
        )
        self.inverse_diagonal = np.tile(1.0 / diagonal, (task_count, 1))
        self.gram_target = targets.T @ rotated  # (tasks, dim + 1)
        self.target_sum_squares = (targets.astype(np.float64) ** 2).sum(axis=0)
        self.degrees_of_freedom = _degrees_of_freedom(eigenvalues, self.alphas, train_size / sample_count)

    def solve_split(self, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Fit every task and penalty on the training rows of one split.

        Vectors are rows, one per task and penalty, task-major.

        Args:
            held_out: Held-out rows of the split ``(test_size,)``.

        Returns:
            Held-out predictions ``(tasks, alphas, test_size)``, the GCV
            criterion on the training rows ``(tasks, alphas)`` and the largest
            relative residual of the solves.
        """
        from .linalg_kernel import rows_dot, solve_woodbury

        task_count = self.targets.shape[1]
        alpha_count = len(self.alphas)
        inputs = self.rotated[held_out]  # (test_size, dim + 1)
        held_out_targets = self.targets[held_out]  # (test_size, tasks)

        # Right-hand side of the split's normal equations: Zᵀy minus the held-out part.
        train_target = self.gram_target - held_out_targets.T @ inputs  # (tasks, dim + 1)
        full_solution = np.repeat(train_target, alpha_count, axis=0) * self.inverse_diagonal
        right_side = np.empty((len(full_solution), len(inputs)), dtype=np.float32)
        rows_dot(inputs, full_solution, right_side)
        solution, projected_solution, residual, relative_residual = solve_woodbury(
            inputs, np.ascontiguousarray(inputs.T), self.inverse_diagonal, right_side, CG_TOLERANCE,
            CG_MAX_ITERATIONS,
        )
        # ZT w = b + ZT D⁻¹ ZTᵀ x = x + (b - (I - ZT D⁻¹ ZTᵀ) x): the solution plus its residual.
        predictions = solution + residual
        weights = full_solution + projected_solution * self.inverse_diagonal

        # Training residual sum of squares from the normal equations:
        # RSS = yᵀy - wᵀb - alpha·|w|² (the intercept is not penalised).
        train_sum_squares = self.target_sum_squares - (held_out_targets.astype(np.float64) ** 2).sum(axis=0)
        weights64 = weights.astype(np.float64).reshape(task_count, alpha_count, -1)
        fitted = (weights64 * train_target.astype(np.float64)[:, None, :]).sum(axis=2)
        penalty = self.alphas.astype(np.float64) * (weights64[:, :, :-1] ** 2).sum(axis=2)
        residual_sum = np.clip(train_sum_squares[:, None] - fitted - penalty, 0.0, None)
        remaining = np.clip(self.train_size - self.degrees_of_freedom, 0.0, None)
        with np.errstate(divide="ignore"):
            criterion = np.where(remaining > 0.5, self.train_size * residual_sum / remaining**2, np.inf)
        return predictions.reshape(task_count, alpha_count, -1), criterion, relative_residual


def _degrees_of_freedom(eigenvalues: np.ndarray, alphas: np.ndarray, train_fraction: float) -> np.ndarray:
    """Return the effective number of parameters per penalty, intercept included.

    NOTE: this uses the eigenvalues of all the task's rows scaled to the
    training size, not those of each split's training rows, which would need
    one eigendecomposition per split. No held-out label enters the criterion.
    """
    scaled = eigenvalues.astype(np.float64)[None, :] * train_fraction
    return 1.0 + (scaled / (scaled + alphas.astype(np.float64)[:, None])).sum(axis=1)
