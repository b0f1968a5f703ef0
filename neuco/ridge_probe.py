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
    torch = import_optional("torch", "fitting ridge probes")
    sample_count, dim = features.shape
    train_size = train_rows.shape[1]
    targets = torch.from_numpy(
        np.stack(
            [
                2.0 * task_labels - 1.0 if task_type == "classification" else task_labels
                for task_labels, task_type in zip(labels, task_types, strict=True)
            ],
            axis=1,
        ).astype(np.float32)
    )  # (samples, tasks)

    # Eigenbasis of the centred embeddings; the ones column then stays orthogonal to Z.
    inputs = torch.from_numpy(features)
    centred = inputs - inputs.mean(dim=0, dtype=torch.float64).to(torch.float32)
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred)
    eigenvalues = eigenvalues.clamp(min=0.0)
    basis = _Basis(
        rotated=torch.cat([centred @ eigenvectors, torch.ones(sample_count, 1)], dim=1),
        eigenvalues=eigenvalues,
        targets=targets,
        train_size=train_size,
    )
    del centred

    chunk = max(1, HELD_OUT_BYTES_PER_CHUNK // (test_rows.shape[1] * (dim + 1) * 4))
    scores, chosen = [], []
    for start in range(0, len(test_rows), chunk):
        held_out = torch.from_numpy(test_rows[start : start + chunk])
        predictions, criterion = basis.solve_splits(held_out, reporter)
        best = criterion.argmin(dim=2)  # (folds, tasks)
        chosen.append(best.numpy())
        fold_index = torch.arange(len(held_out)).unsqueeze(1)
        task_index = torch.arange(len(labels)).unsqueeze(0)
        best_predictions = predictions[fold_index, task_index, best].numpy()  # (folds, tasks, test_size)
        test_index = held_out.numpy()
        scores.append(
            np.stack(
                [
                    fold_scores(task_type, task_labels[test_index], best_predictions[:, task])
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
            alphas=basis.alphas.numpy()[chosen_index[:, task]].astype(np.float64),
            relative_alphas=np.asarray(RELATIVE_ALPHAS)[chosen_index[:, task]],
        )
        for task in range(len(labels))
    ]


class _Basis:
    """The tasks' data in the eigenbasis, with what every split's solve shares."""

    def __init__(self, rotated, eigenvalues, targets, train_size: int) -> None:  # noqa: ANN001 (torch tensors)
        """Keep ``rotated`` ``(samples, dim + 1)`` and ``targets`` ``(samples, tasks)``."""
        torch = import_optional("torch", "fitting ridge probes")
        self.rotated = rotated
        self.targets = targets
        self.train_size = train_size
        sample_count = len(rotated)
        scale = float(eigenvalues.mean()) or 1.0
        self.alphas = torch.tensor(RELATIVE_ALPHAS, dtype=torch.float32) * scale
        # Penalised Gram diagonal per penalty (alphas, dim + 1); the intercept is not penalised.
        self.diagonal = torch.cat(
            [
                eigenvalues.unsqueeze(0) + self.alphas.unsqueeze(1),
                torch.full((len(self.alphas), 1), float(sample_count)),
            ],
            dim=1,
        )
        self.gram_target = targets.T @ rotated  # (tasks, dim + 1)
        self.degrees_of_freedom = _degrees_of_freedom(eigenvalues, self.alphas, train_size / sample_count)

    def solve_splits(self, held_out, reporter: Reporter):  # noqa: ANN001, ANN201 (torch tensors)
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
        torch = import_optional("torch", "fitting ridge probes")
        fold_count = len(held_out)
        task_count = self.targets.shape[1]
        alpha_count = len(self.alphas)
        held_out_inputs = torch.index_select(self.rotated, 0, held_out.reshape(-1)).view(
            fold_count, held_out.shape[1], -1
        )  # (folds, test_size, dim + 1)
        held_out_targets = self.targets[held_out].transpose(1, 2)  # (folds, tasks, test_size)
        transposed = held_out_inputs.transpose(1, 2)
        inverse_diagonal = (1.0 / self.diagonal).repeat(task_count, 1).unsqueeze(0)  # (1, columns, dim + 1)

        # Right-hand side of each split's normal equations: Zᵀy minus the held-out part.
        train_target = self.gram_target - torch.bmm(held_out_targets, held_out_inputs)  # (folds, tasks, dim + 1)
        columns = train_target.repeat_interleave(alpha_count, dim=1)  # (folds, columns, dim + 1)
        full_solution = columns * inverse_diagonal

        def woodbury_matrix_times(vectors):  # noqa: ANN001, ANN202
            """Return (I - ZT D⁻¹ ZTᵀ) v for v of shape (folds, columns, test_size)."""
            return vectors - torch.bmm(torch.bmm(vectors, held_out_inputs) * inverse_diagonal, transposed)

        right_side = torch.bmm(full_solution, transposed)
        correction = _conjugate_gradients(woodbury_matrix_times, right_side, reporter)
        weights = full_solution + torch.bmm(correction, held_out_inputs) * inverse_diagonal
        predictions = torch.bmm(weights, transposed)

        # Training residual sum of squares from the normal equations:
        # RSS = yᵀy - wᵀb - alpha·|w|² (the intercept is not penalised).
        train_sum_squares = (self.targets.double() ** 2).sum(dim=0) - (held_out_targets.double() ** 2).sum(dim=2)
        weights64 = weights.double().view(fold_count, task_count, alpha_count, -1)
        residual = (
            train_sum_squares.unsqueeze(2)
            - (weights64 * train_target.double().unsqueeze(2)).sum(dim=3)
            - self.alphas.double() * (weights64[..., :-1] ** 2).sum(dim=3)
        ).clamp(min=0.0)
        remaining = (self.train_size - self.degrees_of_freedom).clamp(min=0.0)
        criterion = torch.where(
            remaining > 0.5, self.train_size * residual / remaining**2, torch.full_like(residual, float("inf"))
        )
        return predictions.view(fold_count, task_count, alpha_count, -1), criterion


def _degrees_of_freedom(eigenvalues, alphas, train_fraction: float):  # noqa: ANN001, ANN202 (torch tensors)
    """Return the effective number of parameters per penalty, intercept included.

    NOTE: this uses the eigenvalues of all the task's rows scaled to the
    training size, not those of each split's training rows, which would need
    one eigendecomposition per split. No held-out label enters the criterion.
    """
    scaled = eigenvalues.double().unsqueeze(0) * train_fraction
    return 1.0 + (scaled / (scaled + alphas.double().unsqueeze(1))).sum(dim=1)


def _conjugate_gradients(matrix_times, right_side, reporter: Reporter):  # noqa: ANN001, ANN202
    """Solve symmetric positive definite systems row by row, all rows at once.

    Args:
        matrix_times: Applies the matrices to ``(batch, systems, size)`` vectors.
        right_side: ``(batch, systems, size)``.
        reporter: Receives a warning if the tolerance is not reached.

    Returns:
        The solutions, same shape as ``right_side``.
    """
    torch = import_optional("torch", "fitting ridge probes")
    solution = torch.zeros_like(right_side)
    residual = right_side.clone()
    direction = residual.clone()
    residual_norm = (residual * residual).sum(dim=2, keepdim=True)  # (batch, systems, 1)
    target_norm = residual_norm * CG_TOLERANCE**2
    for _ in range(CG_MAX_ITERATIONS):
        if bool((residual_norm <= target_norm).all()):
            return solution
        product = matrix_times(direction)
        curvature = (direction * product).sum(dim=2, keepdim=True)
        step = torch.where(curvature > 0, residual_norm / curvature.clamp(min=1e-30), torch.zeros_like(curvature))
        solution += step * direction
        residual -= step * product
        new_norm = (residual * residual).sum(dim=2, keepdim=True)
        ratio = torch.where(residual_norm > 0, new_norm / residual_norm.clamp(min=1e-30), torch.zeros_like(new_norm))
        direction = residual + ratio * direction
        residual_norm = new_norm
    worst = float((residual_norm / target_norm.clamp(min=1e-30)).max().sqrt()) * CG_TOLERANCE
    reporter.warning(
        f"Ridge probe: the conjugate-gradient solve stopped after {CG_MAX_ITERATIONS} iterations "
        f"with a relative residual of {worst:.1e} (tolerance {CG_TOLERANCE:.0e}); scores may be slightly off."
    )
    return solution
