"""Compiled training loop of the ``neuco`` probe: mini-batch steps and AdamW for every split.

Each mini-batch step reads its rows once: the kernel takes a row's dot
product with the weights and adds the row, scaled by its loss gradient, to
the batch gradient while the row is still in the CPU cache. Gathering the
batch and multiplying it twice with torch reads every row three times, and
those reads bound the probe's speed. The kernel is compiled by numba on
first use and cached next to this file.

The arithmetic is torch's, in float32: the gradient of the batch-mean MSE
(``2 (logit - y) / n``) or BCE-with-logits (``(sigmoid(logit) - y) / n``)
loss, and ``torch.optim.AdamW``'s single-tensor update. Sums run in another
order than torch's, so results differ in the last bits of float32.
"""

import math

import numpy as np

from ..errors import import_optional

numba = import_optional("numba", "training the neuco probe")


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _loss_gradient(logit, target, rows, classification):  # noqa: ANN001, ANN202 (numba scalars)
    """Return the derivative of the batch-mean loss with respect to one row's logit."""
    if classification:
        return np.float32((np.float32(1.0) / (np.float32(1.0) + math.exp(-logit)) - target) / np.float32(rows))
    return np.float32((logit - target) * np.float32(2.0 / rows))


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def train_epoch(  # noqa: PLR0913 (one argument per array and setting, as numba needs them)
    inputs: np.ndarray,
    targets: np.ndarray,
    order: np.ndarray,
    weights: np.ndarray,
    first_moment: np.ndarray,
    second_moment: np.ndarray,
    steps_done: int,
    classification: bool,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    beta1: float,
    beta2: float,
    epsilon: float,
) -> int:
    """Run one epoch of mini-batch AdamW steps for every split, updating the weights in place.

    Args:
        inputs: Embeddings with a column of ones ``(samples, dim + 1)`` float32.
        targets: Targets ``(samples,)`` float32.
        order: Rows of each split in this epoch's order ``(folds, train_size)`` int64.
        weights: Weights ``(folds, dim + 1)`` float32, bias last; updated.
        first_moment: AdamW's first moment, same shape; updated.
        second_moment: AdamW's second moment, same shape; updated.
        steps_done: Steps taken before this epoch (the same for every split).
        classification: BCE-with-logits loss when true, MSE otherwise.
        batch_size: Rows per step; the last step of the epoch takes the rest.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        beta1: AdamW first-moment coefficient.
        beta2: AdamW second-moment coefficient.
        epsilon: AdamW epsilon.

    Returns:
        The number of steps taken after this epoch.
    """
    folds, train_size = order.shape
    dim = inputs.shape[1]
    gradient = np.empty(dim, np.float32)
    decay = np.float32(1.0 - learning_rate * weight_decay)
    first_rate = np.float32(1.0 - beta1)
    second_keep = np.float32(beta2)
    second_rate = np.float32(1.0 - beta2)
    step = steps_done
    for fold in range(folds):
        weight = weights[fold]
        first = first_moment[fold]
        second = second_moment[fold]
        step = steps_done
        for start in range(0, train_size, batch_size):
            stop = min(start + batch_size, train_size)
            rows = stop - start
            step += 1
            gradient[:] = 0.0
            position = start
            # Four rows at a time give four independent sums, which the CPU overlaps.
            while position + 3 < stop:
                row_a, row_b = order[fold, position], order[fold, position + 1]
                row_c, row_d = order[fold, position + 2], order[fold, position + 3]
                x_a, x_b, x_c, x_d = inputs[row_a], inputs[row_b], inputs[row_c], inputs[row_d]
                logit_a = logit_b = logit_c = logit_d = np.float32(0.0)
                for column in range(dim):
                    value = weight[column]
                    logit_a += x_a[column] * value
                    logit_b += x_b[column] * value
                    logit_c += x_c[column] * value
                    logit_d += x_d[column] * value
                scale_a = _loss_gradient(logit_a, targets[row_a], rows, classification)
                scale_b = _loss_gradient(logit_b, targets[row_b], rows, classification)
                scale_c = _loss_gradient(logit_c, targets[row_c], rows, classification)
                scale_d = _loss_gradient(logit_d, targets[row_d], rows, classification)
                for column in range(dim):
                    gradient[column] += (scale_a * x_a[column] + scale_b * x_b[column]) + (
                        scale_c * x_c[column] + scale_d * x_d[column]
                    )
                position += 4
            while position < stop:
                row = order[fold, position]
                x = inputs[row]
                logit = np.float32(0.0)
                for column in range(dim):
                    logit += x[column] * weight[column]
                scale = _loss_gradient(logit, targets[row], rows, classification)
                for column in range(dim):
                    gradient[column] += scale * x[column]
                position += 1
            # torch.optim.AdamW (single tensor): decay, moments, bias-corrected step.
            correction1 = np.float32(1.0 - beta1**step)
            correction2_sqrt = np.float32(math.sqrt(1.0 - beta2**step))
            step_size = np.float32(-learning_rate / correction1)
            for column in range(dim):
                weight[column] *= decay
                first[column] += first_rate * (gradient[column] - first[column])
                second[column] = second[column] * second_keep + second_rate * gradient[column] * gradient[column]
                denominator = math.sqrt(second[column]) / correction2_sqrt + np.float32(epsilon)
                weight[column] += step_size * first[column] / denominator
    return step


def load() -> None:
    """Compile the kernel, or load it from numba's cache, by running it once on one sample."""
    weights = np.zeros((1, 2), dtype=np.float32)
    train_epoch(np.ones((1, 2), dtype=np.float32), np.zeros(1, dtype=np.float32), np.zeros((1, 1), dtype=np.int64),
                weights, np.zeros_like(weights), np.zeros_like(weights), 0, False, 64, 1e-3, 0.01, 0.9, 0.999, 1e-8)
