"""Command line of the NeuCo-Bench evaluator: ``python -m fusedeo.neuco``.

The options match the parameters of the ``fusedeo:evaluate`` Processing
algorithm. Messages go to standard error, the score table to standard output.
"""

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

from ..errors import PluginError
from ..reporting import LoggingReporter
from .evaluate import EvaluationConfig, EvaluationResult, evaluate
from .protocol import DEFAULT_K_FOLDS, PROBES


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m fusedeo.neuco",
        description=(
            "Score embeddings with the NeuCo-Bench protocol: per-task Q over shuffle splits, a run "
            "summary, the phase leaderboard and an HTML report."
        ),
    )
    # Inputs.
    parser.add_argument("--embeddings-csv", type=Path, required=True, help="CSV with an 'id' column and one column per dimension.")
    parser.add_argument("--labels-folder", type=Path, required=True, help="Folder of <task>__<type>.csv label files.")

    # Probe and splits.
    parser.add_argument(
        "--probe",
        choices=PROBES,
        default="neuco",
        help=(
            "neuco: the reference's AdamW-trained linear layer, whose scores match NeuCo-Bench (default); "
            "ridge: closed-form ridge, faster, with scores of its own."
        ),
    )
    parser.add_argument("--k-folds", type=int, default=DEFAULT_K_FOLDS, help="Shuffle splits per task (default: %(default)s).")

    # Outputs.
    parser.add_argument("--phase", default="results", help="Group of runs ranked together (default: %(default)s).")
    parser.add_argument("--method-name", help="Name of this run (default: the CSV file name without suffix).")
    parser.add_argument("--output-folder", type=Path, default=Path("results"), help="Root of the results (default: %(default)s).")
    parser.add_argument(
        "--output-report",
        type=Path,
        help="HTML report of the phase (default: <output-folder>/leaderboards/<phase>/report.html).",
    )

    # Less common options.
    parser.add_argument("--embedding-dim", type=int, help="Zero-pad the embeddings to this width (default or 0: the file's width).")
    parser.add_argument("--exclude-file", type=Path, help="File of ids to leave out, one per line.")
    parser.add_argument("--tasks", help="Comma-separated task names to score (default: every task).")
    parser.add_argument("--no-standardize", action="store_true", help="Do not standardise the embedding values.")
    parser.add_argument("--no-normalize-labels", action="store_true", help="Do not min-max scale the labels per task.")
    parser.add_argument("--workers", type=int, help="Tasks probed at once, one CPU thread each (default: one per core).")
    parser.add_argument("--quiet", action="store_true", help="Print only the score table and the paths.")
    return parser


def config_from_arguments(arguments: argparse.Namespace) -> EvaluationConfig:
    """Turn parsed arguments into an evaluation configuration."""
    tasks = tuple(name.strip() for name in arguments.tasks.split(",") if name.strip()) if arguments.tasks else None
    return EvaluationConfig(
        embeddings_csv=arguments.embeddings_csv,
        labels_folder=arguments.labels_folder,
        output_folder=arguments.output_folder,
        probe=arguments.probe,
        k_folds=arguments.k_folds,
        phase=arguments.phase,
        method_name=arguments.method_name,
        report_path=arguments.output_report,
        embedding_dim=arguments.embedding_dim or None,
        exclude_file=arguments.exclude_file,
        tasks=tasks or None,
        standardize=not arguments.no_standardize,
        normalize_labels=not arguments.no_normalize_labels,
        workers=arguments.workers,
        fork_reader=True,
    )


def format_result(result: EvaluationResult) -> str:
    """Return the score table and the output paths as text."""
    width = max(len("task"), *(len(score.task_name) for score in result.task_scores))
    lines = [f"{'task':<{width}}  {'type':<14}  {'mean':>8}  {'std':>8}  {'Q':>8}"]
    for score in result.task_scores:
        lines.append(
            f"{score.task_name:<{width}}  {score.task_type:<14}  {score.mean:8.4f}  {score.std:8.4f}  {score.q:8.2f}"
        )
    lines.append(f"mean Q: {result.overall_q:.2f}   ({result.elapsed_s:.1f} s)")
    lines.append(f"run:         {result.run_folder}")
    lines.append(f"leaderboard: {result.leaderboard_path}")
    lines.append(f"report:      {result.report_path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluator; return the process exit status."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if arguments.quiet else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        result = evaluate(config_from_arguments(arguments), LoggingReporter("fusedeo.neuco"))
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no results were written.", file=sys.stderr)
        return 130
    try:
        print(format_result(result))
    except BrokenPipeError:  # the reader stopped early, as `| head` does
        pass
    return 0


if __name__ == "__main__":
    # Python's cycle collector made 262 passes over numba's many objects in a benchmark run (0.05 s).
    # One run allocates a bounded set of objects, and its peak memory stayed the same without it.
    gc.disable()
    exit_status = main()
    # The outputs are written and closed. Ending the process here skips Python's teardown of its
    # modules (numba and llvmlite bring about 700), which took 0.08 s: a twentieth of a ridge run.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader stopped early, as `| head` does
            pass
    os._exit(exit_status)
