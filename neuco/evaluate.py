"""Score an embeddings CSV on a labels folder: read, probe every task, write results, leaderboard and report."""

import multiprocessing
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, OutputError, RunCancelledError, import_optional
from ..reporting import LoggingReporter, Reporter
from . import inputs
from .linear_probe import LinearProbeSettings
from .probing import probe_tasks
from .protocol import DEFAULT_K_FOLDS, PROBES
from .report import write_report
from .results import (
    LEADERBOARD_FOLDER,
    check_folder_name,
    new_run_folder,
    read_phase_runs,
    write_leaderboard_csv,
    write_run_summary,
    write_task_result,
)
from .ridge_probe import RELATIVE_ALPHAS
from .scores import TaskScore, rank_runs

@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of an evaluation run; defaults are NeuCo-Bench's sample configuration.

    Attributes:
        embeddings_csv: The embeddings CSV.
        labels_folder: Folder of ``<task>__<type>.csv`` label files.
        output_folder: Root of the results; runs go to ``<output>/<phase>/``.
        probe: ``"neuco"`` (the reference's trained linear layer) or ``"ridge"``.
        k_folds: Number of shuffle splits per task.
        phase: Group of runs ranked together in one leaderboard.
        method_name: Name of the run; defaults to the CSV file name without suffix.
        report_path: The phase's HTML report; defaults to
            ``<output>/leaderboards/<phase>/report.html``.
        embedding_dim: Width to zero-pad the embeddings to; None keeps the file's.
        exclude_file: File of ids to leave out, one per line.
        tasks: Names of the tasks to score; None scores every task.
        standardize: Whether to standardise all values with one mean and std.
        normalize_labels: Whether to min-max scale each task's labels to [0, 1].
        linear: Training settings of the ``neuco`` probe.
        workers: CPU threads to probe on; None uses torch's intra-op thread
            count (the number of cores by default).
        fork_reader: For the ``neuco`` probe, parse the embeddings CSV in a
            forked process while this one imports torch, which saves about a
            second on two cores. Only for a process that has started no
            threads, such as the command line: forking QGIS or another
            threaded program is unsafe.
    """

    embeddings_csv: Path
    labels_folder: Path
    output_folder: Path
    probe: str = "neuco"
    k_folds: int = DEFAULT_K_FOLDS
    phase: str = "results"
    method_name: str | None = None
    report_path: Path | None = None
    embedding_dim: int | None = None
    exclude_file: Path | None = None
    tasks: tuple[str, ...] | None = None
    standardize: bool = True
    normalize_labels: bool = True
    linear: LinearProbeSettings = field(default_factory=LinearProbeSettings)
    workers: int | None = None
    fork_reader: bool = False


@dataclass(frozen=True)
class EvaluationResult:
    """Paths written by a run and its scores."""

    run_folder: Path
    summary_path: Path
    task_scores: list[TaskScore]
    leaderboard_path: Path
    report_path: Path
    elapsed_s: float

    @property
    def overall_q(self) -> float:
        """Mean Q over the run's tasks."""
        return float(np.mean([score.q for score in self.task_scores]))


def check_config(config: EvaluationConfig) -> None:
    """Raise InputError for settings that cannot work, before any file is read."""
    if config.probe not in PROBES:
        raise InputError(f"PROBE (--probe): '{config.probe}' is not valid; expected one of {', '.join(PROBES)}.")
    if config.k_folds < 2:
        raise InputError(f"K_FOLDS (--k-folds): {config.k_folds} is too small; use at least 2 splits (NeuCo-Bench uses 40).")
    if config.embedding_dim is not None and config.embedding_dim < 1:
        raise InputError(
            f"EMBEDDING_DIM (--embedding-dim): {config.embedding_dim} is not a valid width; give a positive number or leave it empty."
        )
    check_folder_name(config.phase, "PHASE", reserved=(LEADERBOARD_FOLDER,))
    check_folder_name(method_name(config), "METHOD_NAME")
    if config.workers is not None and config.workers < 1:
        raise InputError(f"--workers: {config.workers} is not valid; use at least 1.")


def check_output_paths(config: EvaluationConfig) -> None:
    """Raise InputError if the output folder or the report cannot be created where they are asked for.

    This runs before the inputs are read, so a bad path costs no probing.
    """
    output_folder = Path(config.output_folder)
    if output_folder.exists() and not output_folder.is_dir():
        raise InputError(
            f"OUTPUT_FOLDER (--output-folder): {output_folder} is a file; give a folder, which is created if missing."
        )
    _check_creatable(output_folder, "OUTPUT_FOLDER (--output-folder)")
    report_path = phase_report_path(config)
    if report_path.is_dir():
        raise InputError(
            f"OUTPUT_REPORT (--output-report): {report_path} is a folder; give the path of an HTML file."
        )
    _check_creatable(report_path, "OUTPUT_REPORT (--output-report)")


def _check_creatable(path: Path, parameter: str) -> None:
    """Raise InputError if an existing ancestor of ``path`` is not a folder."""
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(
                    f"{parameter}: {path} cannot be created because {ancestor} is a file; choose another path."
                )
            return


def check_inputs(config: EvaluationConfig) -> None:
    """Check settings, file names and headers without reading the data (for checkParameterValues).

    Raises:
        InputError: If a setting, a label file name or the CSV header is invalid.
        MissingFileError: If an input file or folder does not exist.
    """
    check_config(config)
    check_output_paths(config)
    inputs.check_embeddings_header(Path(config.embeddings_csv), config.embedding_dim)
    folder = Path(config.labels_folder)
    task_names = {inputs.parse_label_file_name(path)[0] for path in inputs.label_file_paths(folder)}
    inputs.check_task_filter(config.tasks, task_names, folder)
    if config.exclude_file:
        inputs.read_exclude_file(Path(config.exclude_file))


def method_name(config: EvaluationConfig) -> str:
    """Return the run's method name: the one given, or the CSV name without suffix."""
    return config.method_name or Path(config.embeddings_csv).stem


def default_report_path(output_folder: Path, phase: str) -> Path:
    """Return ``<output>/leaderboards/<phase>/report.html``."""
    return output_folder / LEADERBOARD_FOLDER / phase / "report.html"


def phase_report_path(config: EvaluationConfig) -> Path:
    """Return the report path given in the settings, or the phase's default one."""
    if config.report_path:
        return Path(config.report_path)
    return default_report_path(Path(config.output_folder), config.phase)


def evaluate(config: EvaluationConfig, reporter: Reporter | None = None) -> EvaluationResult:
    """Score the embeddings on every task and update the phase's leaderboard and report.

    Args:
        config: Inputs, probe and output settings.
        reporter: Receives progress, messages and cancellation; defaults to logging.

    Returns:
        The run folder, the task scores and the paths written.

    Raises:
        InputError: If a setting or an input file is invalid.
        MissingFileError: If an input file or folder does not exist.
        RunCancelledError: If the reporter is cancelled; nothing is written then.
        OutputError: If the results, leaderboard or report cannot be written.
            The run folder is removed then, and the leaderboard and report
            keep their previous content.
    """
    reporter = reporter or LoggingReporter(__name__)
    started = time.perf_counter()
    check_config(config)
    check_output_paths(config)
    embeddings, tasks = load_tasks(config, reporter)
    loaded = time.perf_counter()
    if reporter.is_canceled():
        raise RunCancelledError("Evaluation cancelled while reading the inputs; nothing was written.")

    scores, details = probe_tasks(
        embeddings.values, tasks, config.probe, config.k_folds, config.linear, config.workers, reporter
    )
    timing = {"read_inputs_s": loaded - started, "probe_s": time.perf_counter() - loaded}
    reporter.debug(f"Inputs read in {timing['read_inputs_s']:.2f} s, tasks probed in {timing['probe_s']:.2f} s.")
    # The run folder appears only once every task is scored, so a failed or cancelled run leaves nothing.
    try:
        run_folder = new_run_folder(Path(config.output_folder), config.phase, method_name(config))
    except OSError as err:
        raise OutputError(f"OUTPUT_FOLDER (--output-folder): the run folder cannot be created: {err}") from err
    try:
        for score in scores:
            write_task_result(run_folder, score, details[score.task_name])
        summary_path = write_run_summary(
            run_folder, run_folder.name, scores, run_config(config), run_details(config, tasks, timing)
        )
    except BaseException as err:
        shutil.rmtree(run_folder, ignore_errors=True)
        if isinstance(err, OSError):
            raise OutputError(f"writing the results to {run_folder} failed: {err}") from err
        raise
    for score in scores:
        reporter.info(f"{score.task_name}: Q = {score.q:.2f} (mean {score.mean:.4f}, std {score.std:.4f}).")
    reporter.info(f"Mean Q over {len(scores)} tasks: {np.mean([score.q for score in scores]):.2f}.")

    try:
        leaderboard_path, report_path = update_phase(config, reporter)
    except BaseException:
        # update_phase changes the leaderboard and report only when both are written.
        shutil.rmtree(run_folder, ignore_errors=True)
        raise
    return EvaluationResult(
        run_folder, summary_path, scores, leaderboard_path, report_path, time.perf_counter() - started
    )


def load_tasks(config: EvaluationConfig, reporter: Reporter) -> tuple[inputs.Embeddings, list[inputs.TaskData]]:
    """Read the labels and embeddings and assemble the tasks to score.

    Raises:
        InputError: If a task of the filter does not exist, or no task can be scored.
    """
    label_files = inputs.read_labels_folder(Path(config.labels_folder), reporter)
    task_names = {label_file.task_name for label_file in label_files}
    inputs.check_task_filter(config.tasks, task_names, Path(config.labels_folder))
    # Standardisation statistics cover the ids of every task, as in NeuCo-Bench, even with a task filter.
    keep_ids = {row_id for label_file in label_files for row_id in label_file.ids}
    exclude_ids = inputs.read_exclude_file(Path(config.exclude_file)) if config.exclude_file else None
    read_arguments = (Path(config.embeddings_csv), keep_ids, reporter, config.embedding_dim, exclude_ids)
    # macOS offers fork too, but system frameworks there are not fork-safe.
    # Only the neuco probe imports torch; the ridge probe has nothing to overlap with the parsing.
    if config.fork_reader and config.probe == "neuco" and sys.platform.startswith("linux"):
        embeddings = _read_while_importing_torch(read_arguments)
    else:
        embeddings = inputs.read_embeddings(*read_arguments)
    if config.standardize and len(embeddings.ids):
        values, mean, std = inputs.standardize(embeddings.values, in_place=True)
        embeddings = inputs.Embeddings(embeddings.path, embeddings.ids, values, embeddings.file_dim)
        reporter.info(f"Standardised all values with mean {mean:.4g} and standard deviation {std:.4g}.")
    selected = [label_file for label_file in label_files if not config.tasks or label_file.task_name in config.tasks]
    tasks = inputs.assemble_tasks(embeddings, selected, reporter, config.normalize_labels)
    if not tasks:
        raise InputError(
            f"no task of {config.labels_folder} can be scored with {config.embeddings_csv}; "
            "see the warnings above for the reason per task."
        )
    return embeddings, tasks


def _read_while_importing_torch(read_arguments: tuple[Any, ...]) -> inputs.Embeddings:
    """Run :func:`inputs.read_embeddings` in a forked process and import torch meanwhile.

    Parsing the CSV and importing torch each take about a second and each
    hold one interpreter lock, so two processes do both at once. The
    ``neuco`` probe's compiled kernel is loaded in the same wait. The child's
    messages go to the inherited logging handlers; its errors are raised here.
    """
    context = multiprocessing.get_context("fork")
    # Ctrl-C reaches the whole process group. The parent stops the run, so the reader ignores it.
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_ignore_interrupts) as executor:
        future = executor.submit(inputs.read_embeddings, *read_arguments)
        import_optional("torch", "probing embeddings")
        from . import probe_kernel

        probe_kernel.load()
        return future.result()


def _ignore_interrupts() -> None:
    """Make the forked reader ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_config(config: EvaluationConfig) -> dict[str, Any]:
    """Return the settings stored in the run summary, with NeuCo-Bench's key names where they exist."""
    probe_params: dict[str, Any]
    if config.probe == "neuco":
        probe_params = asdict(config.linear)
    else:
        probe_params = {"relative_alphas": list(RELATIVE_ALPHAS), "selection": "GCV"}
    return {
        "k_folds": config.k_folds,
        "probe_type": config.probe,
        "probe_params": probe_params,
        "embedding_dim": config.embedding_dim,
        "standardize_embeddings": config.standardize,
        "normalize_labels": config.normalize_labels,
        "task_filter": list(config.tasks) if config.tasks else None,
    }


def run_details(config: EvaluationConfig, tasks: list[inputs.TaskData], timing: dict[str, float]) -> dict[str, Any]:
    """Return what else the run summary records: inputs, sample counts, version and timing."""
    return {
        "fusedeo_version": __version__,
        "embeddings_csv": str(config.embeddings_csv),
        "labels_folder": str(config.labels_folder),
        "exclude_file": str(config.exclude_file) if config.exclude_file else None,
        "task_samples": {task.name: len(task.rows) for task in tasks},
        "task_types": {task.name: task.task_type for task in tasks},
        "timing": {name: round(seconds, 3) for name, seconds in timing.items()},
    }


def update_phase(config: EvaluationConfig, reporter: Reporter) -> tuple[Path, Path]:
    """Rank every run of the phase and rewrite its leaderboard CSV and HTML report."""
    output_folder = Path(config.output_folder)
    runs = read_phase_runs(output_folder, config.phase, reporter)
    leaderboard = rank_runs(runs)
    leaderboard_path = output_folder / LEADERBOARD_FOLDER / config.phase / "leaderboard.csv"
    report_path = phase_report_path(config)
    # Both files are written next to their targets first and replace them only when both are complete.
    staged_leaderboard = leaderboard_path.with_name(f".{leaderboard_path.name}.partial")
    staged_report = report_path.with_name(f".{report_path.name}.partial")
    try:
        write_leaderboard_csv(staged_leaderboard, leaderboard, runs)
        write_report(staged_report, config.phase, runs, leaderboard)
        os.replace(staged_leaderboard, leaderboard_path)
        os.replace(staged_report, report_path)
    except OSError as err:
        raise OutputError(f"writing the leaderboard or the report of phase '{config.phase}' failed: {err}") from err
    finally:
        staged_leaderboard.unlink(missing_ok=True)
        staged_report.unlink(missing_ok=True)
    if leaderboard.incomplete:
        reporter.warning(
            f"Leaderboard: {len(leaderboard.incomplete)} runs lack a task score and are not ranked: "
            f"{', '.join(leaderboard.incomplete[:5])}."
        )
    ranked = f"{len(leaderboard.rows)} ranked run" + ("" if len(leaderboard.rows) == 1 else "s")
    reporter.info(f"Leaderboard of phase '{config.phase}' ({ranked}): {leaderboard_path}.")
    return leaderboard_path, report_path
