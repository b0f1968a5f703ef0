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
``(I - ZT D⁻¹ ZTᵀ) x = ZT D⁻¹ b``, solved by batched conjugate gradients for
every split and penalty at once.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import RunCancelledError, import_optional
from ..reporting import Reporter
from .protocol import fold_scores

RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(10.0**exponent) for exponent in np.arange(-4.0, 2.01, 0.5))
"""Penalties tried, as multiples of the mean eigenvalue of the task's ``XᵀX``."""

CG_TOLERANCE = 1e-5
"""Relative residual at which the conjugate-gradient solves stop."""

CG_MAX_ITERATIONS = 200
HELD_OUT_BYTES_PER_CHUNK = 256 * 2**20
"""Memory for gathered held-out rows at a time; more splits are solved in chunks."""


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
            for cancellation between chunks of splits.

    Returns:
        The held-out score and the chosen penalty per split, per task.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    linalg = import_optional("scipy.linalg", "fitting ridge probes")
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
    centred = features - features.mean(axis=0, dtype=np.float64).astype(np.float32)
    gram = centred.T @ centred  # numpy computes a product with its own transpose as a symmetric rank-k update
    eigenvalues, eigenvectors = linalg.eigh(gram, driver="evd", overwrite_a=True, check_finite=False)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    rotated = np.ones((sample_count, dim + 1), dtype=np.float32)
    np.matmul(centred, eigenvectors, out=rotated[:, :dim])
    del centred, gram
    basis = _Basis(rotated=rotated, eigenvalues=eigenvalues, targets=targets, train_size=train_size)

    chunk = max(1, HELD_OUT_BYTES_PER_CHUNK // (test_rows.shape[1] * (dim + 1) * 4))
    scores, chosen = [], []
    for start in range(0, len(test_rows), chunk):
        held_out = test_rows[start : start + chunk]
        predictions, criterion = basis.solve_splits(held_out, reporter)
        best = criterion.argmin(axis=2)  # (folds, tasks)
        chosen.append(best)
        fold_index = np.arange(len(held_out))[:, None]
        task_index = np.arange(len(labels))[None, :]
        best_predictions = predictions[fold_index, task_index, best]  # (folds, tasks, test_size)
        scores.append(
            np.stack(
                [
                    fold_scores(task_type, task_labels[held_out], best_predictions[:, task])
                    for task, (task_labels, task_type) in enumerate(zip(labels, task_types, strict=True))
                ],
                axis=1,
            )
        )
        if reporter.is_canceled():
            raise RunCancelledError("Evaluation cancelled while fitting ridge probes.")
    chosen_index = np.concatenate(chosen)  # (folds, tasks)
    all_scores = np.concatenate(scores)
    return [
        RidgeResults(
            scores=all_scores[:, task],
            alphas=basis.alphas[chosen_index[:, task]].astype(np.float64),
            relative_alphas=np.asarray(RELATIVE_ALPHAS)[chosen_index[:, task]],
        )
        for task in range(len(labels))
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
        # Penalised Gram diagonal per penalty (alphas, dim + 1); the intercept is not penalised.
        self.diagonal = np.concatenate(
            [
                eigenvalues[None, :].astype(np.float32) + self.alphas[:, None],
                np.full((len(self.alphas), 1), float(sample_count), dtype=np.float32),
            ],
            axis=1,
        )
        self.gram_target = targets.T @ rotated  # (tasks, dim + 1)
        self.degrees_of_freedom = _degrees_of_freedom(eigenvalues, self.alphas, train_size / sample_count)

    def solve_splits(self, held_out: np.ndarray, reporter: Reporter) -> tuple[np.ndarray, np.ndarray]:
        """Fit every task and penalty on the training rows of some splits.

        Systems are batched as (folds, columns, ...) with one column per
        task and penalty, task-major.

        Args:
            held_out: Held-out rows of the splits ``(folds, test_size)``.
            reporter: Receives a warning if a solve does not converge.

        Returns:
            Held-out predictions ``(folds, tasks, alphas, test_size)`` and the
            GCV criterion on the training rows ``(folds, tasks, alphas)``.
        """
        fold_count = len(held_out)
        task_count = self.targets.shape[1]
        alpha_count = len(self.alphas)
        held_out_inputs = self.rotated[held_out]  # (folds, test_size, dim + 1)
        held_out_targets = self.targets[held_out].transpose(0, 2, 1)  # (folds, tasks, test_size)
        transposed = held_out_inputs.transpose(0, 2, 1)
        inverse_diagonal = np.tile(1.0 / self.diagonal, (task_count, 1))[None]  # (1, columns, dim + 1)

        # Right-hand side of each split's normal equations: Zᵀy minus the held-out part.
        train_target = self.gram_target - held_out_targets @ held_out_inputs  # (folds, tasks, dim + 1)
        columns = np.repeat(train_target, alpha_count, axis=1)  # (folds, columns, dim + 1)
        full_solution = columns * inverse_diagonal

        def woodbury_matrix_times(vectors: np.ndarray) -> np.ndarray:
            """Return (I - ZT D⁻¹ ZTᵀ) v for v of shape (folds, columns, test_size)."""
            return vectors - ((vectors @ held_out_inputs) * inverse_diagonal) @ transposed

        right_side = full_solution @ transposed
        correction = _conjugate_gradients(woodbury_matrix_times, right_side, reporter)
        weights = full_solution + (correction @ held_out_inputs) * inverse_diagonal
        predictions = weights @ transposed

        # Training residual sum of squares from the normal equations:
        # RSS = yᵀy - wᵀb - alpha·|w|² (the intercept is not penalised).
        targets64 = self.targets.astype(np.float64)
        train_sum_squares = (targets64**2).sum(axis=0) - (held_out_targets.astype(np.float64) ** 2).sum(axis=2)
        weights64 = weights.astype(np.float64).reshape(fold_count, task_count, alpha_count, -1)
        residual = np.clip(
            train_sum_squares[:, :, None]
            - (weights64 * train_target.astype(np.float64)[:, :, None, :]).sum(axis=3)
            - self.alphas.astype(np.float64) * (weights64[..., :-1] ** 2).sum(axis=3),
            0.0,
            None,
        )
        remaining = np.clip(self.train_size - self.degrees_of_freedom, 0.0, None)
        with np.errstate(divide="ignore"):
            criterion = np.where(remaining > 0.5, self.train_size * residual / remaining**2, np.inf)
        return predictions.reshape(fold_count, task_count, alpha_count, -1), criterion


def _degrees_of_freedom(eigenvalues: np.ndarray, alphas: np.ndarray, train_fraction: float) -> np.ndarray:
    """Return the effective number of parameters per penalty, intercept included.

    NOTE: this uses the eigenvalues of all the task's rows scaled to the
    training size, not those of each split's training rows, which would need
    one eigendecomposition per split. No held-out label enters the criterion.
    """
    scaled = eigenvalues.astype(np.float64)[None, :] * train_fraction
    return 1.0 + (scaled / (scaled + alphas.astype(np.float64)[:, None])).sum(axis=1)


def _conjugate_gradients(
    matrix_times: Callable[[np.ndarray], np.ndarray], right_side: np.ndarray, reporter: Reporter
) -> np.ndarray:
    """Solve symmetric positive definite systems row by row, all rows at once.

    Args:
        matrix_times: Applies the matrices to ``(batch, systems, size)`` vectors.
        right_side: ``(batch, systems, size)``.
        reporter: Receives a warning if the tolerance is not reached.

    Returns:
        The solutions, same shape as ``right_side``.
    """
    solution = np.zeros_like(right_side)
    residual = right_side.copy()
    direction = residual.copy()
    residual_norm = (residual * residual).sum(axis=2, keepdims=True)  # (batch, systems, 1)
    target_norm = residual_norm * CG_TOLERANCE**2
    for _ in range(CG_MAX_ITERATIONS):
        if bool((residual_norm <= target_norm).all()):
            return solution
        product = matrix_times(direction)
        curvature = (direction * product).sum(axis=2, keepdims=True)
        step = np.where(curvature > 0, residual_norm / np.maximum(curvature, 1e-30), 0.0).astype(np.float32)
        solution += step * direction
        residual -= step * product
        new_norm = (residual * residual).sum(axis=2, keepdims=True)
        ratio = np.where(residual_norm > 0, new_norm / np.maximum(residual_norm, 1e-30), 0.0).astype(np.float32)
        direction = residual + ratio * direction
        residual_norm = new_norm
    worst = float(np.sqrt((residual_norm / np.maximum(target_norm, 1e-30)).max())) * CG_TOLERANCE
    reporter.warning(
        f"Ridge probe: the conjugate-gradient solve stopped after {CG_MAX_ITERATIONS} iterations "
        f"with a relative residual of {worst:.1e} (tolerance {CG_TOLERANCE:.0e}); scores may be slightly off."
    )
    return solution
