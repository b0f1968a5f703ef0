"""NeuCo-Bench scores: per-task Q and the leaderboard's rank aggregation.

Formulas from NeuCo-Bench (``benchmark/evaluation/evaluation.py`` and
``benchmark/evaluation/results.py``, github.com/embed2scale/NeuCo-Bench):
``Q = 2 · mean / (0.02 + std)`` over the fold scores, and a leaderboard that
ranks runs per task, weights tasks by the spread of Q across runs and ranks
the weighted rank sums.
"""

import math
from dataclasses import dataclass, field

import numpy as np

Q_STD_OFFSET = 0.02
"""Added to the standard deviation in Q, so a perfect, stable probe scores Q = 100."""


def q_score(mean: float, std: float) -> float:
    """Return NeuCo-Bench's Q statistic, ``2 · mean / (0.02 + std)``."""
    return 2.0 * mean / (Q_STD_OFFSET + std)


@dataclass(frozen=True)
class TaskScore:
    """Fold scores of one task and their summary."""

    task_name: str
    task_type: str
    fold_scores: np.ndarray  # (folds,) R² or F1; NaN for a fold that could not be scored

    @property
    def mean(self) -> float:
        """Mean of the fold scores, ignoring NaN."""
        return _nan_statistic(np.nanmean, self.fold_scores)

    @property
    def std(self) -> float:
        """Population standard deviation of the fold scores, ignoring NaN."""
        return _nan_statistic(np.nanstd, self.fold_scores)

    @property
    def q(self) -> float:
        """The task's Q statistic."""
        return q_score(self.mean, self.std)


def _nan_statistic(function, values: np.ndarray) -> float:  # noqa: ANN001 (numpy reduction)
    """Apply a NaN-ignoring reduction; NaN when every value is NaN."""
    if np.isnan(values).all():
        return math.nan
    return float(function(values))


@dataclass(frozen=True)
class RunScores:
    """Per-task scores of one run, as stored in its run summary."""

    experiment: str
    task_q: dict[str, float]
    task_mean: dict[str, float] = field(default_factory=dict)
    probe: str = ""  # "neuco" or "ridge"; NeuCo-Bench's own runs store "linear" or "svm"

    @property
    def overall_q(self) -> float:
        """Mean Q over the run's tasks."""
        return float(np.mean(list(self.task_q.values()))) if self.task_q else math.nan

    @property
    def overall_mean(self) -> float:
        """Mean of the tasks' mean scores."""
        return float(np.mean(list(self.task_mean.values()))) if self.task_mean else math.nan


@dataclass(frozen=True)
class LeaderboardRow:
    """One ranked run."""

    experiment: str
    mean_q: float
    weighted_score: float
    aggregated_rank: int
    task_ranks: dict[str, int]


@dataclass(frozen=True)
class Leaderboard:
    """Runs of a phase ranked by NeuCo-Bench's rank aggregation, best first."""

    tasks: list[str]
    weights: dict[str, float]
    rows: list[LeaderboardRow]
    incomplete: list[str]  # experiments left out because a task score is missing or NaN


def min_ranks(values: np.ndarray) -> np.ndarray:
    """Rank ``values`` from 1 (lowest); ties get the lowest rank of the tie ("min" method)."""
    return 1 + (values[None, :] < values[:, None]).sum(axis=1)


def rank_runs(runs: list[RunScores]) -> Leaderboard:
    """Rank runs the way NeuCo-Bench's leaderboard does.

    1. Runs missing a task that another run has, or with a NaN Q, are left out.
    2. Per task, runs are ranked by Q, highest first; ties share the lowest rank.
    3. Task weights are the standard deviations (ddof 1) of Q across runs,
       divided by their sum. With one run, or if every task has the same Q in
       every run, the weights are equal; the reference gives NaN there.
    4. The weighted score is the sum of rank times weight, and the
       aggregated rank ranks the weighted scores, lowest first.
    """
    tasks = sorted({task for run in runs for task in run.task_q})
    is_complete = [all(_is_number(run.task_q.get(task)) for task in tasks) for run in runs]
    complete = [run for run, keep in zip(runs, is_complete, strict=True) if keep]
    incomplete = [run.experiment for run, keep in zip(runs, is_complete, strict=True) if not keep]
    if not complete or not tasks:
        return Leaderboard(tasks, {task: math.nan for task in tasks}, [], incomplete)

    scores = np.array([[run.task_q[task] for task in tasks] for run in complete], dtype=np.float64)
    ranks = np.stack([min_ranks(-scores[:, column]) for column in range(len(tasks))], axis=1)
    spreads = scores.std(axis=0, ddof=1) if len(complete) > 1 else np.zeros(len(tasks))
    if spreads.sum() > 0:
        weights = spreads / spreads.sum()
    else:
        weights = np.full(len(tasks), 1.0 / len(tasks))
    weighted = (ranks * weights).sum(axis=1)
    aggregated = min_ranks(weighted)

    rows = [
        LeaderboardRow(
            experiment=run.experiment,
            mean_q=float(scores[index].mean()),
            weighted_score=float(weighted[index]),
            aggregated_rank=int(aggregated[index]),
            task_ranks={task: int(ranks[index, column]) for column, task in enumerate(tasks)},
        )
        for index, run in enumerate(complete)
    ]
    rows.sort(key=lambda row: (row.weighted_score, row.experiment))
    return Leaderboard(tasks, dict(zip(tasks, weights.tolist(), strict=True)), rows, incomplete)


def _is_number(value: float | None) -> bool:
    """Return whether ``value`` is a number other than NaN."""
    return value is not None and not math.isnan(value)
