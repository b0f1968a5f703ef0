"""Downstream proxy with labels: the NeuCo-Bench score of a checkpoint's embeddings.

When the user gives NeuCo-Bench label files, a checkpoint is scored by what
the benchmark itself measures. That is the ``neuco`` probe of
:mod:`fusedeo.neuco`: shuffle splits with 10 % held out, a linear layer
trained with AdamW for 10 epochs, and the best epoch of each split. The
embeddings get the benchmark's global standardisation and the labels its
min-max scaling. The score of a checkpoint is the mean Q over the tasks, so
the chosen checkpoint and output conditioning maximise the benchmark's own
number.

The probe runs on every labelled patch of both splits of the autoencoder,
because the benchmark scores the embeddings of the patches it is given. The
autoencoder is trained without the labels, and its held-out split still
measures the reconstruction loss on patches it was not trained on.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError
from ..neuco.inputs import (
    MIN_TASK_SAMPLES,
    Embeddings,
    LabelFile,
    TaskData,
    assemble_tasks,
    read_labels_folder,
    standardize,
)
from ..neuco.linear_probe import LinearProbeSettings
from ..neuco.probing import probe_tasks
from ..neuco.protocol import DEFAULT_K_FOLDS
from ..reporting import Reporter


@dataclass
class NeucoProxy:
    """Score embeddings by the NeuCo-Bench protocol on the user's labelled tasks.

    Attributes:
        tasks: The tasks; their rows index the training rows followed by the held-out rows.
        reporter: Receives warnings and is polled for cancellation while probing.
        k_folds: Shuffle splits per task.
        notes: How the tasks were matched, for the report.
        kind: Always ``"labels"``.
    """

    tasks: list[TaskData]
    reporter: Reporter
    k_folds: int = DEFAULT_K_FOLDS
    notes: list[str] = field(default_factory=list)
    kind: str = "labels"

    def __post_init__(self) -> None:
        """Route the probes' messages through one filter for the whole training run."""
        self._quiet = _QuietReporter(self.reporter)

    def task_scores(self, train_embeddings: np.ndarray, holdout_embeddings: np.ndarray) -> dict[str, float]:
        """Return the Q score of every task.

        Args:
            train_embeddings: ``(n_train, K)`` embeddings of the training split.
            holdout_embeddings: ``(n_holdout, K)`` embeddings of the held-out split.
        """
        values = np.concatenate([train_embeddings, holdout_embeddings]).astype(np.float32)
        # As NeuCo-Bench: one mean and one standard deviation over the rows that any task labels.
        # The probes read only those rows, so the others stay as they are.
        labelled = np.unique(np.concatenate([task.rows for task in self.tasks]))
        values[labelled] = standardize(values[labelled])[0]
        scores, _ = probe_tasks(values, self.tasks, "neuco", self.k_folds, LinearProbeSettings(), None, self._quiet)
        return {score.task_name: score.q for score in scores}

    def score(self, train_embeddings: np.ndarray, holdout_embeddings: np.ndarray) -> float:
        """Return the mean Q over the tasks (higher is better)."""
        return float(np.nanmean(list(self.task_scores(train_embeddings, holdout_embeddings).values())))


def neuco_proxy(labels_folder: str | Path, train_ids: list[str], holdout_ids: list[str], reporter: Reporter,
                k_folds: int = DEFAULT_K_FOLDS, parameter: str = "LABELS_FOLDER") -> NeucoProxy:
    """Read NeuCo-Bench label files and match them to the feature-store ids.

    Args:
        labels_folder: Folder of ``<task>__<type>.csv`` files with ``id`` and ``label`` columns.
        train_ids: Store ids of the training rows, in row order.
        holdout_ids: Store ids of the held-out rows, in row order.
        reporter: Receives the matching messages and, later, the probes' warnings.
        k_folds: Shuffle splits per task.
        parameter: Parameter name for error messages.

    Raises:
        MissingFileError: If the folder does not exist.
        InputError: If a label file is invalid, no label id is a store id, a
            classification task is not binary, or no task has enough labelled patches.
    """
    folder = Path(labels_folder)
    ids = list(train_ids) + list(holdout_ids)
    label_files = read_labels(folder, reporter, parameter)
    try:
        known = set(ids)
        if not any(identifier in known for label_file in label_files for identifier in label_file.ids):
            raise InputError(
                f"the label files share no ids with the feature stores (store ids such as {sorted(ids)[:3]}; "
                f"first ids of {label_files[0].path.name}: {label_files[0].ids[:3]}). Label ids must be the store "
                "ids: the file name of the embed run's OUTPUT raster without its extension, a slash, then the "
                "patch's row_column, for example 'embedding/0_3'."
            )
        embeddings = Embeddings(folder, ids, np.empty((len(ids), 0), dtype=np.float32), 0)
        tasks = assemble_tasks(embeddings, label_files, reporter)
    except InputError as err:
        raise InputError(f"{parameter}: {err}") from err
    if not tasks:
        raise InputError(
            f"{parameter}: no task in {folder} has at least {MIN_TASK_SAMPLES} labelled patches with distinct "
            "labels in the feature stores. Label more patches, or leave LABELS_FOLDER empty to use label-free "
            "proxy targets."
        )
    holdout_start = len(train_ids)
    notes = [
        f"{task.name} ({task.task_type}): NeuCo-Bench score over {len(task.rows)} labelled patches "
        f"({int((task.rows >= holdout_start).sum())} of them held out from training), {k_folds} splits."
        for task in tasks
    ]
    return NeucoProxy(tasks, reporter, k_folds, notes)


def read_labels(folder: str | Path, reporter: Reporter, parameter: str = "LABELS_FOLDER") -> list[LabelFile]:
    """Read a folder of NeuCo-Bench label files, naming ``parameter`` in errors.

    Raises:
        MissingFileError: If the folder does not exist.
        InputError: If it has no label file or a file is invalid.
    """
    try:
        return read_labels_folder(Path(folder), reporter)
    except MissingFileError as err:
        raise MissingFileError(f"{parameter}: {err}") from err
    except InputError as err:
        raise InputError(f"{parameter}: {err}") from err


class _QuietReporter:
    """Forward each distinct warning once and the cancellation; drop the probes' progress and routine messages."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._warned: set[str] = set()

    def info(self, message: str) -> None:
        """Drop routine messages, which would repeat at every checkpoint."""

    def warning(self, message: str) -> None:
        """Forward a warning the first time it occurs; every checkpoint would repeat it."""
        if message not in self._warned:
            self._warned.add(message)
            self._reporter.warning(message)

    def debug(self, message: str) -> None:
        """Drop debug messages."""

    def progress(self, percent: float) -> None:
        """Drop the probes' progress, which is not the training's."""

    def is_canceled(self) -> bool:
        """Return whether the user asked to stop."""
        return self._reporter.is_canceled()
