"""Run the probes of every task on worker threads and collect their scores."""

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import import_optional
from ..models.device import usable_cpu_count
from ..reporting import Reporter
from .inputs import TaskData
from .linear_probe import FoldResults, LinearProbeSettings, draw_initial_state, probe_inputs, train_linear_probes
from .protocol import SEED, shuffle_splits
from .ridge_probe import RELATIVE_ALPHAS, fit_ridge_splits
from .scores import TaskScore

TaskDetails = dict[str, dict[str, Any]]

MIN_TRAINING_STEPS = 100
"""AdamW steps per split below which the ``neuco`` probe is reported as barely trained."""

STILL_IMPROVING_SHARE = 0.5
"""Share of splits whose best epoch is the last one from which a task's ``neuco`` probe is reported as undertrained."""


def probe_tasks(
    values: np.ndarray,
    tasks: list[TaskData],
    probe: str,
    k_folds: int,
    linear: LinearProbeSettings,
    workers: int | None,
    reporter: Reporter,
) -> tuple[list[TaskScore], TaskDetails]:
    """Probe every task, using ``workers`` CPU threads.

    Work runs on Python threads with one math-library thread each, because
    torch, numba's kernel and BLAS release the GIL. The ``neuco`` probe gives each worker one
    group of a task's splits, so the workers share the task's embeddings in
    the CPU cache. The ``ridge`` probe runs one group of tasks per worker.
    On a busy machine this is much faster than torch's own threads, whose
    synchronisation at every small operation stalls when a core is taken.

    NOTE: torch's intra-op and BLAS thread counts are process-wide; they are
    set to 1 while the probes run and restored afterwards.

    Args:
        values: Embeddings ``(rows, dim)`` that the tasks' rows index.
        tasks: The tasks, in task-name order.
        probe: ``"neuco"`` or ``"ridge"``.
        k_folds: Shuffle splits per task.
        linear: Training settings of the ``neuco`` probe.
        workers: Threads to use; None uses torch's intra-op thread count
            (``neuco``) or the number of usable CPUs (``ridge``).
        reporter: Receives progress and messages, and may cancel.

    Returns:
        The scores per task, in task-name order, and the details for each task's JSON.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    stoppable = _StoppableReporter(reporter)
    with _one_thread_per_worker(probe) as default_workers:
        workers = max(1, workers or default_workers)
        reporter.info(f"Probe {probe}: {len(tasks)} tasks, {k_folds} splits each, {workers} threads.")
        with ThreadPoolExecutor(max_workers=workers) as executor:
            try:
                if probe == "neuco":
                    scores, details = _probe_neuco(values, tasks, k_folds, linear, workers, stoppable, executor)
                else:
                    scores, details = _probe_ridge(values, tasks, k_folds, stoppable, executor)
            except BaseException:
                # A failed job or Ctrl-C drops the queued jobs and stops the running ones
                # at their next cancellation check.
                stoppable.stop()
                executor.shutdown(wait=False, cancel_futures=True)
                raise
    return sorted(scores, key=lambda score: score.task_name), details


@contextlib.contextmanager
def _one_thread_per_worker(probe: str) -> Iterator[int]:
    """Limit the math libraries to one thread each while the workers run; yield the default worker count.

    The ``neuco`` probe uses torch for its draws and held-out products, so
    torch's intra-op threads are limited and their count is the default. The
    ``ridge`` probe uses numpy, and SciPy's LAPACK through numba, whose BLAS
    threads are limited with threadpoolctl, and the default is the number of
    CPUs this process may use.
    """
    if probe == "neuco":
        torch = import_optional("torch", "probing embeddings")
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield previous_threads
        finally:
            torch.set_num_threads(previous_threads)
    else:
        threadpoolctl = import_optional("threadpoolctl", "fitting ridge probes")
        from . import linalg_kernel

        linalg_kernel.load()
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            yield usable_cpu_count()


def _probe_neuco(
    values: np.ndarray,
    tasks: list[TaskData],
    k_folds: int,
    linear: LinearProbeSettings,
    workers: int,
    reporter: "_StoppableReporter",
    executor: ThreadPoolExecutor,
) -> tuple[list[TaskScore], TaskDetails]:
    """Train the linear probes, one group of splits per worker, tasks one after the other."""
    torch = import_optional("torch", "training the neuco probe")
    generator = torch.Generator().manual_seed(SEED)
    parts = [part for part in np.array_split(np.arange(k_folds), workers) if len(part)]
    groups = [slice(int(part[0]), int(part[-1]) + 1) for part in parts]
    progress = _Progress(reporter, len(tasks) * linear.epochs * len(groups))
    shared_inputs = _SharedInputs(values, len(groups))
    futures: list[Future] = []
    for task in tasks:
        train_rows, test_rows = shuffle_splits(len(task.rows), k_folds)
        _warn_if_barely_trained(task.name, train_rows.shape[1], linear, reporter)
        # Draws are made in task-name order on this thread, so they repeat the reference's sequence.
        state = draw_initial_state(generator, k_folds, values.shape[1], train_rows.shape[1], test_rows.shape[1], linear)
        futures += [
            executor.submit(
                _train_group, shared_inputs, task, train_rows[group], test_rows[group], state.select(group),
                linear, reporter, progress,
            )
            for group in groups
        ]
    results = [future.result() for future in futures]

    scores, details = [], {}
    still_improving = []
    for index, task in enumerate(tasks):
        result = FoldResults.concatenate(results[index * len(groups) : (index + 1) * len(groups)])
        scores.append(TaskScore(task.name, task.task_type, result.scores))
        if linear.epochs > 1 and np.mean(result.best_epochs == linear.epochs) >= STILL_IMPROVING_SHARE:
            still_improving.append(f"{task.name} ({int((result.best_epochs == linear.epochs).sum())} of {k_folds})")
        details[task.name] = {
            "probe": "neuco",
            "n_samples": len(task.rows),
            "hyperparameters": asdict(linear),
            "best_epochs": result.best_epochs.tolist(),
            "mean_score_per_epoch": np.nanmean(result.epoch_scores, axis=1).tolist(),
        }
    if still_improving:
        reporter.warning(
            f"Probe neuco: the held-out score was still rising at the last of {linear.epochs} epochs in most "
            f"splits of {', '.join(still_improving)}. The probe is undertrained there, as the NeuCo-Bench protocol "
            "prescribes, so a low Q may not mean the embeddings lack the signal. The ridge probe is fitted in closed "
            "form and has no such limit."
        )
    return scores, details


def _warn_if_barely_trained(task_name: str, train_size: int, linear: LinearProbeSettings, reporter: Reporter) -> None:
    """Warn when a task's splits give the probe too few AdamW steps for its Q to mean much."""
    steps = math.ceil(train_size / linear.batch_size) * linear.epochs
    if steps < MIN_TRAINING_STEPS:
        reporter.warning(
            f"{task_name}: {train_size} training rows per split give the probe only {steps} AdamW steps "
            f"({linear.epochs} epochs of batches of {linear.batch_size}), so it is barely trained and its Q says "
            "little about the embeddings. Label more samples, or compare with the ridge probe."
        )


def _train_group(
    shared_inputs: "_SharedInputs",
    task: TaskData,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    state: Any,
    linear: LinearProbeSettings,
    reporter: Reporter,
    progress: "_Progress",
) -> FoldResults:
    """Train one group of a task's splits (runs on a worker thread)."""
    started = time.perf_counter()
    try:
        result = train_linear_probes(
            shared_inputs.acquire(task), task.labels, task.task_type, train_rows, test_rows, state, reporter,
            linear, on_epoch=progress.advance,
        )
    finally:
        shared_inputs.release(task)
    reporter.debug(f"{task.name}: {len(train_rows)} splits trained in {time.perf_counter() - started:.2f} s.")
    return result


class _SharedInputs:
    """A task's probe inputs, built once for all its groups of splits and freed after the last one.

    Groups of the same task then read one copy of the embeddings, which
    keeps the CPU cache for one task matrix instead of one per thread.
    """

    def __init__(self, values: np.ndarray, groups_per_task: int) -> None:
        """Build inputs from rows of ``values`` for ``groups_per_task`` users each."""
        self._values = values
        self._groups_per_task = groups_per_task
        self._inputs: dict[str, Any] = {}
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, task: TaskData) -> Any:
        """Return the task's inputs, building them on first use."""
        with self._lock:
            if task.name not in self._inputs:
                self._inputs[task.name] = probe_inputs(self._values[task.rows])
                self._users[task.name] = self._groups_per_task
            return self._inputs[task.name]

    def release(self, task: TaskData) -> None:
        """Count one group of the task as finished; free the inputs after the last."""
        with self._lock:
            self._users[task.name] -= 1
            if self._users[task.name] == 0:
                del self._inputs[task.name]


def _probe_ridge(
    values: np.ndarray,
    tasks: list[TaskData],
    k_folds: int,
    reporter: "_StoppableReporter",
    executor: ThreadPoolExecutor,
) -> tuple[list[TaskScore], TaskDetails]:
    """Fit the ridge probes, one job per group of tasks that share their samples in the same order."""
    groups: list[list[TaskData]] = []
    for task in tasks:
        for group in groups:
            if np.array_equal(group[0].rows, task.rows):
                group.append(task)
                break
        else:
            groups.append([task])
    progress = _Progress(reporter, len(groups))
    futures = [executor.submit(_fit_ridge_group, values, group, k_folds, reporter, progress) for group in groups]

    scores, details = [], {}
    for group, results in zip(groups, [future.result() for future in futures], strict=True):
        for task, result in zip(group, results, strict=True):
            scores.append(TaskScore(task.name, task.task_type, result.scores))
            details[task.name] = {
                "probe": "ridge",
                "n_samples": len(task.rows),
                "hyperparameters": {"relative_alphas_tried": list(RELATIVE_ALPHAS), "selection": "GCV"},
                "alphas": result.alphas.tolist(),
                "relative_alphas": result.relative_alphas.tolist(),
            }
    return scores, details


def _fit_ridge_group(
    values: np.ndarray, group: list[TaskData], k_folds: int, reporter: Reporter, progress: "_Progress"
) -> list[Any]:
    """Fit ridge models for tasks that share their samples (runs on a worker thread)."""
    started = time.perf_counter()
    train_rows, test_rows = shuffle_splits(len(group[0].rows), k_folds)
    results = fit_ridge_splits(
        values[group[0].rows],
        [task.labels for task in group],
        [task.task_type for task in group],
        train_rows,
        test_rows,
        reporter,
        overwrite_features=True,  # the rows were just gathered into a copy of their own
    )
    names = ", ".join(task.name for task in group)
    reporter.debug(f"{names}: ridge fitted on {k_folds} splits in {time.perf_counter() - started:.2f} s.")
    progress.advance()
    return results


class _StoppableReporter:
    """Reporter shared by the workers; also reports cancellation once :meth:`stop` is called."""

    def __init__(self, reporter: Reporter) -> None:
        """Forward everything to ``reporter``, one call at a time."""
        self._reporter = reporter
        self._stopped = threading.Event()
        # QgsProcessingFeedback's log is not thread-safe, so workers take turns.
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Make :meth:`is_canceled` return True from now on."""
        self._stopped.set()

    def info(self, message: str) -> None:
        """Forward an info message."""
        with self._lock:
            self._reporter.info(message)

    def warning(self, message: str) -> None:
        """Forward a warning."""
        with self._lock:
            self._reporter.warning(message)

    def debug(self, message: str) -> None:
        """Forward a debug message."""
        with self._lock:
            self._reporter.debug(message)

    def progress(self, percent: float) -> None:
        """Forward the progress."""
        with self._lock:
            self._reporter.progress(percent)

    def is_canceled(self) -> bool:
        """Return whether the run was stopped or the wrapped reporter is cancelled."""
        return self._stopped.is_set() or self._reporter.is_canceled()


class _Progress:
    """Progress over a known number of steps, counted from several threads."""

    def __init__(self, reporter: Reporter, total: int) -> None:
        """Report to ``reporter``; ``total`` steps make 100 %."""
        self._reporter = reporter
        self._total = max(total, 1)
        self._done = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        """Count one finished step."""
        with self._lock:
            self._done += 1
            done = self._done
        self._reporter.progress(100.0 * done / self._total)
