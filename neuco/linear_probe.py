"""The ``neuco`` probe: NeuCo-Bench's linear layer, with all splits of a task trained at once.

NeuCo-Bench (``benchmark/evaluation/probes/linear.py``) trains one
``nn.Linear(dim, 1)`` per split with AdamW (weight decay 0.01) on
mini-batches drawn by a ``DataLoader`` over a ``SubsetRandomSampler``, scores
it on the held-out rows after every epoch, and keeps the best epoch's score.
Here the weights of all splits (or of one group of splits per CPU thread)
form one ``(folds, dim + 1)`` array, trained by the compiled loop of
:mod:`.probe_kernel`, which runs the same mini-batch steps and AdamW updates
split after split. The splits do not interact, so this equals training them
one after the other in the reference.

The random draws repeat the reference's, from one generator seeded once per
run. Per split, the layer's initial weight and bias are drawn first. Then,
per epoch, the training loader draws one 64-bit seed and the permutation of
the training rows, and the validation loader draws one seed and the
permutation of the held-out rows (``torch.utils.data.DataLoader`` in torch
2.x). With the same splits this gives the reference's mini-batches and
starting weights, so the scores differ only by floating-point rounding.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RunCancelledError, import_optional
from ..reporting import Reporter
from .protocol import ADAMW_WEIGHT_DECAY, fold_scores

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


@dataclass(frozen=True)
class LinearProbeSettings:
    """Training settings of the ``neuco`` probe (NeuCo-Bench's sample configuration)."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = ADAMW_WEIGHT_DECAY


@dataclass(frozen=True)
class FoldResults:
    """Scores of every split of one task."""

    scores: np.ndarray  # (folds,) best held-out R² or F1
    best_epochs: np.ndarray  # (folds,) 1-based epoch of the best score
    epoch_scores: np.ndarray  # (epochs, folds) held-out score after each epoch

    @staticmethod
    def concatenate(parts: "list[FoldResults]") -> "FoldResults":
        """Join the results of consecutive groups of splits."""
        return FoldResults(
            scores=np.concatenate([part.scores for part in parts]),
            best_epochs=np.concatenate([part.best_epochs for part in parts]),
            epoch_scores=np.concatenate([part.epoch_scores for part in parts], axis=1),
        )


@dataclass(frozen=True)
class InitialState:
    """Random draws of one task: starting weights and per-epoch training orders."""

    weights: Any  # torch.Tensor (folds, dim + 1) float32, bias in the last column
    orders: Any  # torch.Tensor (folds, epochs, train_size) int32, positions into each split's training rows

    def select(self, folds: slice) -> "InitialState":
        """Return the draws of some splits."""
        return InitialState(self.weights[folds], self.orders[folds])


def draw_initial_state(
    generator: Any,
    fold_count: int,
    dim: int,
    train_size: int,
    test_size: int,
    settings: LinearProbeSettings = LinearProbeSettings(),
) -> InitialState:
    """Draw a task's starting weights and training orders in the reference's order.

    Args:
        generator: torch.Generator seeded once per run. It is advanced as
            the reference advances its global generator, so tasks must be
            drawn one after the other in task-name order.
        fold_count: Number of splits.
        dim: Embedding dimension.
        train_size: Training rows per split.
        test_size: Held-out rows per split.
        settings: Supplies the number of epochs.
    """
    torch = import_optional("torch", "training the neuco probe")
    weights = torch.empty(fold_count, dim + 1)
    orders = torch.empty(fold_count, settings.epochs, train_size, dtype=torch.int32)
    bias_bound = 1.0 / math.sqrt(dim)
    for fold in range(fold_count):
        # nn.Linear.reset_parameters: Kaiming-uniform weight with a = sqrt(5), then the bias.
        weight = torch.empty(1, dim)
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        bias = torch.empty(1).uniform_(-bias_bound, bias_bound, generator=generator)
        weights[fold, :dim] = weight[0]
        weights[fold, dim] = bias[0]
        for epoch in range(settings.epochs):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            orders[fold, epoch] = torch.randperm(train_size, generator=generator)
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            # The validation order changes only the summation order of the score.
            torch.randperm(test_size, generator=generator)
    return InitialState(weights, orders)


def probe_inputs(features: np.ndarray) -> np.ndarray:
    """Return the task's embeddings with a column of ones appended, ``(samples, dim + 1)`` float32.

    The ones column carries the bias, so one product gives weight·x + bias.
    """
    inputs = np.ones((len(features), features.shape[1] + 1), dtype=np.float32)
    inputs[:, :-1] = features
    return inputs


def train_linear_probes(
    inputs: np.ndarray,
    labels: np.ndarray,
    task_type: str,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    initial_state: InitialState,
    reporter: Reporter,
    settings: LinearProbeSettings = LinearProbeSettings(),
    on_epoch: Callable[[], None] | None = None,
) -> FoldResults:
    """Train one linear probe per split and score each by its best epoch.

    Args:
        inputs: The task's standardised embeddings from :func:`probe_inputs`
            ``(samples, dim + 1)`` float32; several threads may share them.
        labels: Targets ``(samples,)``: normalised values, or 0 and 1.
        task_type: ``"regression"`` (MSE loss, R²) or ``"classification"``
            (BCE-with-logits loss, F1 at logit > 0).
        train_rows: Training rows per split ``(folds, train_size)``.
        test_rows: Held-out rows per split ``(folds, test_size)``.
        initial_state: The task's draws from :func:`draw_initial_state`.
        reporter: Checked for cancellation after every epoch.
        settings: Epochs, batch size, learning rate and weight decay.
        on_epoch: Called after every epoch.

    Returns:
        The best held-out score per split, its epoch and all epoch scores.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    torch = import_optional("torch", "training the neuco probe")
    from . import probe_kernel

    weights = initial_state.weights.numpy().copy()
    first_moment = np.zeros_like(weights)
    second_moment = np.zeros_like(weights)
    orders = initial_state.orders.numpy()
    targets = labels.astype(np.float32)
    test_targets = labels[test_rows]
    classification = task_type == "classification"
    inputs_tensor = torch.from_numpy(inputs)
    epoch_scores = np.empty((settings.epochs, len(train_rows)))
    steps = 0
    for epoch in range(settings.epochs):
        # Sample order of this epoch, per split: (folds, train_size) rows of the task.
        order = np.take_along_axis(train_rows, orders[:, epoch].astype(np.int64), axis=1)
        steps = probe_kernel.train_epoch(
            inputs, targets, order, weights, first_moment, second_moment, steps, classification,
            settings.batch_size, settings.learning_rate, settings.weight_decay, ADAM_BETAS[0], ADAM_BETAS[1],
            ADAM_EPSILON,
        )
        predictions = (inputs_tensor @ torch.from_numpy(weights).T).T.numpy()  # (folds, samples)
        held_out = np.take_along_axis(predictions, test_rows, axis=1)
        epoch_scores[epoch] = fold_scores(task_type, test_targets, held_out)
        if on_epoch is not None:
            on_epoch()
        if reporter.is_canceled():
            raise RunCancelledError("Evaluation cancelled during probe training.")

    return _best_epochs(epoch_scores)


def _best_epochs(epoch_scores: np.ndarray) -> FoldResults:
    """Pick each split's first epoch with the highest score; NaN epochs never win."""
    filled = np.where(np.isnan(epoch_scores), -np.inf, epoch_scores)
    best_index = filled.argmax(axis=0)
    best = epoch_scores[best_index, np.arange(epoch_scores.shape[1])]
    return FoldResults(scores=best, best_epochs=best_index + 1, epoch_scores=epoch_scores)
