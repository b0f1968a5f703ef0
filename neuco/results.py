"""Files of evaluation runs: per-task JSON, run summaries and the phase leaderboard.

The layout and keys are NeuCo-Bench's, so runs of both tools can share a
phase folder and one leaderboard::

    <output>/<phase>/<method>_<YYYYmmdd_HHMMSS>/results_summary.json
    <output>/<phase>/<method>_<YYYYmmdd_HHMMSS>/<task>/<task>_result.json
    <output>/leaderboards/<phase>/leaderboard.csv

NeuCo-Bench writes a new time-stamped leaderboard file on every update;
FusedEO rewrites ``leaderboard.csv``, which always covers every run of the phase.
"""

import csv
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..reporting import Reporter
from .scores import Leaderboard, RunScores, TaskScore

SUMMARY_FILE = "results_summary.json"
LEADERBOARD_FOLDER = "leaderboards"


def check_folder_name(value: str, parameter_name: str, reserved: tuple[str, ...] = ()) -> str:
    """Return ``value`` if it can name one folder and is not ``reserved``, else raise InputError."""
    if not value or value in (".", "..") or any(character in value for character in '/\\:*?"<>|'):
        raise InputError(
            f"{parameter_name}: '{value}' cannot be used as a folder name; use letters, digits, '-', '_' or '.'."
        )
    if value in reserved:
        raise InputError(f"{parameter_name}: '{value}' is reserved for other files; choose another name.")
    return value


def new_run_folder(output_folder: Path, phase: str, method_name: str, now: datetime | None = None) -> Path:
    """Create ``<output>/<phase>/<method>_<timestamp>``, adding ``_2``, ``_3``… if it exists."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    phase_folder = output_folder / phase
    phase_folder.mkdir(parents=True, exist_ok=True)
    name = f"{method_name}_{stamp}"
    candidate, counter = phase_folder / name, 2
    while candidate.exists():
        candidate, counter = phase_folder / f"{name}_{counter}", counter + 1
    candidate.mkdir()
    return candidate


def write_task_result(run_folder: Path, score: TaskScore, details: dict[str, Any]) -> Path:
    """Write ``<task>/<task>_result.json`` with NeuCo-Bench's keys and the fold scores.

    Args:
        run_folder: The run's folder.
        score: The task's fold scores.
        details: Further keys, for example the probe and its hyper-parameters.

    Returns:
        The JSON path.
    """
    folder = run_folder / score.task_name
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "q_stat": score.q,
        "mean_score": score.mean,
        "std_dev": score.std,
        "q_t": score.fold_scores.tolist(),
        "task_type": score.task_type,
        **details,
    }
    path = folder / f"{score.task_name}_result.json"
    path.write_text(json.dumps(content, indent=2))
    return path


def write_run_summary(
    run_folder: Path, experiment: str, scores: list[TaskScore], config: dict[str, Any], details: dict[str, Any]
) -> Path:
    """Write ``results_summary.json``: overall and per-task Q and mean scores, and the settings.

    Returns:
        The JSON path.
    """
    run = RunScores(
        experiment,
        task_q={score.task_name: score.q for score in scores},
        task_mean={score.task_name: score.mean for score in scores},
    )
    content = {
        "experiment": experiment,
        "overall_q_score": run.overall_q,
        "overall_acc_score": run.overall_mean,
        "task_q_scores": run.task_q,
        "task_acc_scores": run.task_mean,
        "config": config,
        **details,
    }
    path = run_folder / SUMMARY_FILE
    path.write_text(json.dumps(content, indent=2))
    return path


def read_phase_runs(output_folder: Path, phase: str, reporter: Reporter) -> list[RunScores]:
    """Read the run summaries under ``<output>/<phase>``, in folder-name order.

    Summaries in NeuCo-Bench's older format (``task_result`` per task) are
    read too. Unreadable summaries are skipped with a warning.
    """
    phase_folder = output_folder / phase
    runs = []
    for summary in sorted(phase_folder.glob(f"*/{SUMMARY_FILE}")):
        try:
            content = json.loads(summary.read_text())
            task_q = content.get("task_q_scores", content.get("task_result")) or {}
            runs.append(
                RunScores(
                    experiment=str(content.get("experiment", summary.parent.name)),
                    task_q={task: _as_float(value) for task, value in task_q.items()},
                    task_mean={task: _as_float(value) for task, value in content.get("task_acc_scores", {}).items()},
                    probe=str((content.get("config") or {}).get("probe_type", "")),
                )
            )
        except (OSError, ValueError, TypeError, AttributeError) as err:
            reporter.warning(f"Leaderboard: skipped {summary}, which cannot be read ({err}).")
    return runs


def _as_float(value: Any) -> float:
    """Convert a JSON value to float; None becomes NaN."""
    return math.nan if value is None else float(value)


def write_leaderboard_csv(path: Path, leaderboard: Leaderboard, runs: list[RunScores]) -> Path:
    """Write the ranked runs with NeuCo-Bench's leaderboard columns.

    Columns: ``experiment, mean_score, weighted_score, aggregated_rank``,
    ``q::<task>`` per task, ``acc::<task>`` per task, ``overall_q_score`` and
    ``overall_acc_score``. ``mean_score`` is the mean Q over the ranked tasks.
    A last column ``probe``, which NeuCo-Bench's leaderboard does not have,
    shows which runs are comparable.
    """
    by_name = {run.experiment: run for run in runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["experiment", "mean_score", "weighted_score", "aggregated_rank"]
            + [f"q::{task}" for task in leaderboard.tasks]
            + [f"acc::{task}" for task in leaderboard.tasks]
            + ["overall_q_score", "overall_acc_score", "probe"]
        )
        for row in leaderboard.rows:
            run = by_name[row.experiment]
            writer.writerow(
                [row.experiment, row.mean_q, row.weighted_score, row.aggregated_rank]
                + [run.task_q[task] for task in leaderboard.tasks]
                + [run.task_mean.get(task, "") for task in leaderboard.tasks]
                + [run.overall_q, run.overall_mean, run.probe]
            )
    return path
