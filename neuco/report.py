"""The HTML report of a phase: a heatmap of Q per run and task, mean-Q bars and the leaderboard table.

The report is one self-contained HTML file. The plots are PNG images embedded
as base64, drawn on matplotlib's Agg canvas without pyplot, so the matplotlib
backend that QGIS uses is left alone.
"""

import base64
import html
import io
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import import_optional
from .scores import Leaderboard, RunScores

MISSING_COLOUR = "#bdbdbd"
COMPLETE_COLOUR = "#3b7dbf"
COLOUR_MAP = "RdYlGn"


def task_normalised_scores(q_table: np.ndarray) -> np.ndarray:
    """Scale each column of a ``(runs, tasks)`` Q table to [0, 1] across runs.

    The lowest Q of a task maps to 0 and the highest to 1; a task whose runs
    all have the same Q maps to 0.5. NaN (missing) stays NaN.
    """
    with np.errstate(invalid="ignore"):
        low = np.nanmin(np.where(np.isnan(q_table), np.inf, q_table), axis=0)
        high = np.nanmax(np.where(np.isnan(q_table), -np.inf, q_table), axis=0)
        spread = high - low
        scaled = np.where(spread > 0, (q_table - low) / np.where(spread > 0, spread, 1.0), 0.5)
    return np.where(np.isnan(q_table), np.nan, scaled)


def ordered_runs(runs: list[RunScores], leaderboard: Leaderboard) -> list[RunScores]:
    """Return the ranked runs in leaderboard order, then the others by name."""
    by_name = {run.experiment: run for run in runs}
    ranked = [by_name[row.experiment] for row in leaderboard.rows]
    ranked_names = {run.experiment for run in ranked}
    others = sorted((run for run in runs if run.experiment not in ranked_names), key=lambda run: run.experiment)
    return ranked + others


def write_report(path: Path, phase: str, runs: list[RunScores], leaderboard: Leaderboard) -> Path:
    """Write the phase report to ``path`` and return it.

    Args:
        path: The HTML file to write; its folder is created.
        phase: The phase name, shown in the title.
        runs: Every run of the phase.
        leaderboard: The ranking of the complete runs.
    """
    ordered = ordered_runs(runs, leaderboard)
    tasks = sorted({task for run in runs for task in run.task_q})
    q_table = np.array(
        [[run.task_q.get(task, math.nan) for task in tasks] for run in ordered], dtype=np.float64
    ).reshape(len(ordered), len(tasks))
    sections = [
        f"<h1>NeuCo-Bench report: phase {html.escape(phase)}</h1>",
        _introduction(len(ordered), len(tasks), leaderboard),
        _mixed_probe_warning(runs),
    ]
    if ordered and tasks:
        sections.append("<h2>Q per task</h2>")
        sections.append(_image(_heatmap_figure(ordered, tasks, q_table), "Heatmap of Q per run and task"))
        sections.append("<h2>Mean Q per run</h2>")
        sections.append(_image(_bars_figure(ordered, len(tasks)), "Mean Q per run"))
    sections.append("<h2>Leaderboard</h2>")
    sections.append(_leaderboard_table(ordered, tasks, leaderboard))
    if leaderboard.incomplete:
        names = ", ".join(html.escape(name) for name in leaderboard.incomplete)
        sections.append(
            f"<p>Not ranked, because a task score is missing or not a number: {names}.</p>"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"NeuCo-Bench report: {phase}", "\n".join(sections)), encoding="utf-8")
    return path


def _introduction(run_count: int, task_count: int, leaderboard: Leaderboard) -> str:
    """Describe what the report shows and how the numbers are made."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"<p>{run_count} runs, {task_count} tasks, {len(leaderboard.rows)} ranked; written {stamp}.</p>"
        "<p>Each task is probed on shuffle splits that hold out 10 % of its samples. A split scores R² "
        "(regression) or F1 (classification) on its held-out samples, and "
        "Q = 2 · mean / (0.02 + standard deviation) over the splits, so a perfect, stable probe scores 100 "
        "and a probe worse than predicting the mean scores below 0. In the heatmap, cells show Q and their "
        "colour is Q scaled per task from the lowest run (red) to the highest (green). Runs are ranked per "
        "task by Q; the weighted score sums these ranks with task weights proportional to the spread of Q "
        "across runs, and the aggregated rank orders the weighted scores (lower is better).</p>"
    )


def _mixed_probe_warning(runs: list[RunScores]) -> str:
    """Return a warning paragraph if the phase mixes probes whose scores are not comparable, else ''."""
    # NeuCo-Bench's "linear" probe and FusedEO's "neuco" probe give the same scores.
    families = sorted({"neuco" if run.probe in ("linear", "neuco") else run.probe for run in runs if run.probe})
    if len(families) < 2:
        return ""
    return (
        f"<p><b>This phase mixes probes ({', '.join(html.escape(family) for family in families)}).</b> "
        "Scores of different probes are not comparable, so rank runs of one probe per phase.</p>"
    )


def _heatmap_figure(runs: list[RunScores], tasks: list[str], q_table: np.ndarray):  # noqa: ANN202 (Figure)
    """Draw runs × tasks cells holding Q, coloured by the task-normalised score."""
    figure_module = import_optional("matplotlib.figure", "drawing the report")
    matplotlib = import_optional("matplotlib", "drawing the report")
    cm = import_optional("matplotlib.cm", "drawing the report")
    colors = import_optional("matplotlib.colors", "drawing the report")
    colours = matplotlib.colormaps[COLOUR_MAP]
    normalised = task_normalised_scores(q_table)
    figure = figure_module.Figure(figsize=(max(6.0, 1.2 * len(tasks) + 3.0), max(2.5, 0.42 * len(runs) + 1.8)))
    axes = figure.add_subplot()
    missing = colors.to_rgba(MISSING_COLOUR)
    rgba = np.array(
        [[colours(value) if not math.isnan(value) else missing for value in row] for row in normalised]
    ).reshape(len(runs), len(tasks), 4)
    axes.imshow(rgba, aspect="auto", interpolation="nearest")
    scale = figure.colorbar(cm.ScalarMappable(cmap=colours), ax=axes, fraction=0.04, pad=0.02)
    scale.set_ticks([0.0, 1.0], labels=["lowest Q\nof the task", "highest Q\nof the task"], fontsize=7)
    for row, column in np.ndindex(q_table.shape):
        value = q_table[row, column]
        text = "–" if math.isnan(value) else f"{value:.1f}"
        shade = normalised[row, column]
        dark = not math.isnan(shade) and (shade < 0.2 or shade > 0.85)
        axes.text(column, row, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    axes.set_xticks(range(len(tasks)), labels=tasks, rotation=35, ha="right", fontsize=8)
    axes.set_yticks(range(len(runs)), labels=[run.experiment for run in runs], fontsize=8)
    axes.set_xlabel("Task")
    axes.tick_params(length=0)
    figure.tight_layout()
    return figure


def _bars_figure(runs: list[RunScores], task_count: int):  # noqa: ANN202 (Figure)
    """Draw one horizontal bar of mean Q per run, highest at the top; runs missing tasks in grey."""
    figure_module = import_optional("matplotlib.figure", "drawing the report")
    ordered = sorted(runs, key=lambda run: (-_finite_or(run.overall_q, -math.inf), run.experiment))
    values = [_finite_or(run.overall_q, 0.0) for run in ordered]
    complete = [len(run.task_q) == task_count for run in ordered]
    figure = figure_module.Figure(figsize=(7.5, max(2.0, 0.35 * len(ordered) + 1.2)))
    axes = figure.add_subplot()
    positions = np.arange(len(ordered))
    axes.barh(positions, values, color=[COMPLETE_COLOUR if whole else MISSING_COLOUR for whole in complete])
    for position, value, run, whole in zip(positions, values, ordered, complete, strict=True):
        label = f" {run.overall_q:.2f} " + ("" if whole else f"({len(run.task_q)} of {task_count} tasks) ")
        axes.text(value, position, label, va="center", ha="left" if value >= 0 else "right", fontsize=8)
    axes.set_yticks(positions, labels=[run.experiment for run in ordered], fontsize=8)
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.margins(x=0.25)
    axes.set_xlabel("Mean Q over the run's tasks")
    figure.tight_layout()
    return figure


def _finite_or(value: float, fallback: float) -> float:
    """Return ``value`` unless it is NaN."""
    return fallback if math.isnan(value) else value


def _image(figure, description: str) -> str:  # noqa: ANN001 (Figure)
    """Render a figure as an embedded PNG ``<img>``."""
    backend = import_optional("matplotlib.backends.backend_agg", "drawing the report")
    backend.FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(description)}" src="data:image/png;base64,{encoded}">'


def _leaderboard_table(runs: list[RunScores], tasks: list[str], leaderboard: Leaderboard) -> str:
    """Render every run with its rank, scores and per-task Q as an HTML table."""
    rows_by_name = {row.experiment: row for row in leaderboard.rows}
    header = (
        "<tr><th>Aggregated rank</th><th>Experiment</th><th>Probe</th><th>Mean Q</th><th>Weighted score</th>"
        "<th>Mean R² / F1</th>"
        + "".join(
            f"<th>{html.escape(task)}<br><small>weight {leaderboard.weights.get(task, math.nan):.3f}</small></th>"
            for task in tasks
        )
        + "</tr>"
    )
    body = []
    for run in runs:
        ranked = rows_by_name.get(run.experiment)
        cells = [
            str(ranked.aggregated_rank) if ranked else "–",
            html.escape(run.experiment),
            html.escape(run.probe) or "–",
            _number(run.overall_q),
            _number(ranked.weighted_score, 3) if ranked else "–",
            _number(run.overall_mean, 3),
        ]
        for task in tasks:
            value = run.task_q.get(task, math.nan)
            rank = f" <small>(#{ranked.task_ranks[task]})</small>" if ranked else ""
            cells.append(_number(value) + rank)
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<table>\n{header}\n" + "\n".join(body) + "\n</table>"


def _number(value: float, digits: int = 2) -> str:
    """Format a number for the table; NaN becomes a dash."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _page(title: str, body: str) -> str:
    """Wrap ``body`` in an HTML page with a small inline style sheet."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #eee; }}
td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
