"""The ``neuco`` probe: NeuCo-Bench's linear layer, with all splits of a task trained at once.

NeuCo-Bench (``benchmark/evaluation/probes/linear.py``) trains one
``nn.Linear(dim, 1)`` per split with AdamW (weight decay 0.01) on
mini-batches drawn by a ``DataLoader`` over a ``SubsetRandomSampler``, scores
it on the held-out rows after every epoch, and keeps the best epoch's score.
Here the weights of all splits (or of one group of splits per CPU thread)
form one ``(folds, dim + 1)`` tensor. Each step gathers the mini-batch of
every split, computes all gradients with batched matrix products and updates
all weights with one elementwise AdamW step. AdamW acts per element and every
split takes the same number of steps, so this equals training the splits one
after the other.

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
FOLD_CHUNK = 10
"""Splits whose mini-batches are gathered at once; 10 batches of 64 rows × 1024 dims take 2.6 MB."""


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


def probe_inputs(features: np.ndarray):  # noqa: ANN201 (torch.Tensor)
    """Return the task's embeddings with a column of ones appended, ``(samples, dim + 1)`` float32.

    The ones column carries the bias, so one product gives weight·x + bias.
    """
    torch = import_optional("torch", "training the neuco probe")
    return torch.cat([torch.from_numpy(features), torch.ones(len(features), 1)], dim=1)


def train_linear_probes(
    inputs: Any,
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
            ``(samples, dim + 1)``; several threads may share them.
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
    weights = initial_state.weights.clone()
    orders = initial_state.orders

    targets = torch.from_numpy(labels.astype(np.float32))
    train_index = torch.from_numpy(train_rows)
    test_index = torch.from_numpy(test_rows)
    test_targets = labels[test_rows]
    optimizer = _BatchedAdamW(weights, settings)
    epoch_scores = np.empty((settings.epochs, len(train_rows)))

    for epoch in range(settings.epochs):
        # Sample order of this epoch, per split: (folds, train_size) rows of the task.
        order = torch.gather(train_index, 1, orders[:, epoch].long())
        _train_epoch(inputs, targets, order, task_type, optimizer, settings.batch_size)
        predictions = (inputs @ weights.T).T  # (folds, samples)
        held_out = torch.gather(predictions, 1, test_index).numpy()
        epoch_scores[epoch] = fold_scores(task_type, test_targets, held_out)
        if on_epoch is not None:
            on_epoch()
        if reporter.is_canceled():
            raise RunCancelledError("Evaluation cancelled during probe training.")

    return _best_epochs(epoch_scores)


def _train_epoch(inputs, targets, order, task_type: str, optimizer: "_BatchedAdamW", batch_size: int) -> None:  # noqa: ANN001 (torch tensors)
    """Run one epoch of mini-batch steps for every split.

    Args:
        inputs: The task's embeddings with a column of ones ``(samples, dim + 1)``.
        targets: The task's targets ``(samples,)``.
        order: Rows of each split in this epoch's order ``(folds, train_size)``.
        task_type: ``"regression"`` or ``"classification"``.
        optimizer: Holds the weights ``(folds, dim + 1)`` and updates them.
        batch_size: Rows per mini-batch; the last batch of an epoch may be smaller.
    """
    torch = import_optional("torch", "training the neuco probe")
    fold_count, train_size = order.shape
    weights = optimizer.weights
    gradient = torch.empty_like(weights)
    chunks = [slice(start, min(start + FOLD_CHUNK, fold_count)) for start in range(0, fold_count, FOLD_CHUNK)]
    # The gathered mini-batches of one chunk stay in the CPU cache between the two products.
    batch_buffer = torch.empty(min(FOLD_CHUNK, fold_count) * batch_size, inputs.shape[1])
    ordered_targets = targets[order]
    for start in range(0, train_size, batch_size):
        batch_rows = order[:, start : start + batch_size]
        batch_targets = ordered_targets[:, start : start + batch_size]
        rows_per_split = batch_rows.shape[1]
        for chunk in chunks:
            chunk_rows = batch_rows[chunk]
            batch = torch.index_select(
                inputs, 0, chunk_rows.reshape(-1), out=batch_buffer[: chunk_rows.numel()]
            ).view(len(chunk_rows), rows_per_split, -1)
            logits = torch.bmm(weights[chunk].unsqueeze(1), batch.transpose(1, 2))  # (chunk, 1, batch)
            # Gradient of the batch-mean loss with respect to the logits.
            if task_type == "classification":
                logit_gradient = (torch.sigmoid(logits) - batch_targets[chunk].unsqueeze(1)) / rows_per_split
            else:
                logit_gradient = (logits - batch_targets[chunk].unsqueeze(1)) * (2.0 / rows_per_split)
            torch.bmm(logit_gradient, batch, out=gradient[chunk].unsqueeze(1))
        optimizer.step(gradient)


class _BatchedAdamW:
    """AdamW over a ``(folds, dim + 1)`` weight tensor, with torch.optim.AdamW's single-tensor arithmetic."""

    def __init__(self, weights, settings: LinearProbeSettings) -> None:  # noqa: ANN001 (torch.Tensor)
        """Update ``weights`` in place with the settings' learning rate and weight decay."""
        torch = import_optional("torch", "training the neuco probe")
        self.weights = weights
        self.settings = settings
        self.first_moment = torch.zeros_like(weights)
        self.second_moment = torch.zeros_like(weights)
        self.step_count = 0

    def step(self, gradient) -> None:  # noqa: ANN001 (torch.Tensor)
        """Apply one AdamW step."""
        self.step_count += 1
        beta1, beta2 = ADAM_BETAS
        learning_rate = self.settings.learning_rate
        self.weights.mul_(1.0 - learning_rate * self.settings.weight_decay)
        self.first_moment.lerp_(gradient, 1.0 - beta1)
        self.second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**self.step_count
        bias_correction2_sqrt = (1.0 - beta2**self.step_count) ** 0.5
        denominator = (self.second_moment.sqrt() / bias_correction2_sqrt).add_(ADAM_EPSILON)
        self.weights.addcdiv_(self.first_moment, denominator, value=-learning_rate / bias_correction1)


def _best_epochs(epoch_scores: np.ndarray) -> FoldResults:
    """Pick each split's first epoch with the highest score; NaN epochs never win."""
    filled = np.where(np.isnan(epoch_scores), -np.inf, epoch_scores)
    best_index = filled.argmax(axis=0)
    best = epoch_scores[best_index, np.arange(epoch_scores.shape[1])]
    return FoldResults(scores=best, best_epochs=best_index + 1, epoch_scores=epoch_scores)
