"""The HTML report of a phase: a heatmap of Q per run and task, mean-Q bars and the leaderboard table.

The report is one self-contained HTML file. The heatmap is an HTML table
with coloured cells and the bars are inline SVG, so the numbers stay text
that a reader can select and search, and writing the report needs no
plotting library.
"""

import html
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from .scores import Leaderboard, RunScores

MISSING_COLOUR = "#bdbdbd"
COMPLETE_COLOUR = "#3b7dbf"
COLOUR_SCALE: tuple[tuple[int, int, int], ...] = (
    (0xD7, 0x19, 0x1C),
    (0xFD, 0xAE, 0x61),
    (0xFF, 0xFF, 0xBF),
    (0xA6, 0xD9, 0x6A),
    (0x1A, 0x96, 0x41),
)
"""Red to yellow to green, from the lowest to the highest Q of a task (ColorBrewer's 5-class RdYlGn)."""


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
        sections.append(_heatmap(ordered, tasks, q_table))
        sections.append("<h2>Mean Q per run</h2>")
        sections.append(_bars(ordered, len(tasks)))
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


def colour_of(value: float) -> str:
    """Return the hex colour of a task-normalised score in [0, 1] (red, yellow, green); grey for NaN."""
    if math.isnan(value):
        return MISSING_COLOUR
    position = min(max(value, 0.0), 1.0) * (len(COLOUR_SCALE) - 1)
    index = min(int(position), len(COLOUR_SCALE) - 2)
    fraction = position - index
    low, high = COLOUR_SCALE[index], COLOUR_SCALE[index + 1]
    channels = (round(a + (b - a) * fraction) for a, b in zip(low, high, strict=True))
    return "#" + "".join(f"{channel:02x}" for channel in channels)


def _heatmap(runs: list[RunScores], tasks: list[str], q_table: np.ndarray) -> str:
    """Render runs × tasks cells holding Q, coloured by the task-normalised score, as an HTML table."""
    normalised = task_normalised_scores(q_table)
    header = "<tr><th>Run</th>" + "".join(f"<th>{html.escape(task)}</th>" for task in tasks) + "</tr>"
    body = []
    for row, run in enumerate(runs):
        cells = []
        for column in range(len(tasks)):
            value, shade = q_table[row, column], normalised[row, column]
            # White text on the dark ends of the scale, black on the light middle.
            dark = not math.isnan(shade) and (shade < 0.2 or shade > 0.85)
            style = f"background:{colour_of(shade)};color:{'#fff' if dark else '#000'}"
            cells.append(f'<td style="{style}">{_number(value, 1)}</td>')
        body.append(f"<tr><th>{html.escape(run.experiment)}</th>" + "".join(cells) + "</tr>")
    legend = (
        f'<p class="legend">Colour: <span style="background:{colour_of(0.0)};color:#fff">lowest Q of the '
        f'task</span> <span style="background:{colour_of(0.5)}">middle</span> '
        f'<span style="background:{colour_of(1.0)};color:#fff">highest Q of the task</span> '
        f'<span style="background:{MISSING_COLOUR}">missing</span></p>'
    )
    return f'<table class="heatmap">\n{header}\n' + "\n".join(body) + "\n</table>\n" + legend


def _bars(runs: list[RunScores], task_count: int) -> str:
    """Render one horizontal bar of mean Q per run as inline SVG, highest first; runs missing tasks in grey."""
    ordered = sorted(runs, key=lambda run: (-_finite_or(run.overall_q, -math.inf), run.experiment))
    values = [_finite_or(run.overall_q, 0.0) for run in ordered]
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    label_width, plot_width, value_width, row_height = 220, 480, 170, 22
    zero = label_width + plot_width * (0.0 - low) / span
    parts = []
    for index, (run, value) in enumerate(zip(ordered, values, strict=True)):
        top = 6 + index * row_height
        whole = len(run.task_q) == task_count
        left = zero + min(0.0, value) * plot_width / span
        width = abs(value) * plot_width / span
        colour = COMPLETE_COLOUR if whole else MISSING_COLOUR
        label = f"{_number(run.overall_q)}" + ("" if whole else f" ({len(run.task_q)} of {task_count} tasks)")
        parts.append(
            f'<text x="{label_width - 6}" y="{top + 15}" text-anchor="end">{html.escape(run.experiment)}</text>'
            f'<rect x="{left:.1f}" y="{top + 2}" width="{width:.1f}" height="{row_height - 6}" fill="{colour}">'
            f"<title>{html.escape(run.experiment)}: {label}</title></rect>"
            f'<text x="{label_width + plot_width + 6}" y="{top + 15}">{html.escape(label)}</text>'
        )
    height = 12 + len(ordered) * row_height
    axis = f'<line x1="{zero:.1f}" y1="2" x2="{zero:.1f}" y2="{height - 4}" stroke="#000"/>'
    return (
        f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{label_width + plot_width + value_width}" '
        f'height="{height}" font-size="12" role="img" aria-label="Mean Q per run">'
        + "".join(parts) + axis + "</svg>"
    )


def _finite_or(value: float, fallback: float) -> float:
    """Return ``value`` unless it is NaN."""
    return fallback if math.isnan(value) else value


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
table.heatmap td {{ text-align: center; min-width: 4em; }}
table.heatmap th {{ text-align: left; }}
p.legend span {{ padding: 0.1em 0.5em; }}
svg.bars {{ max-width: 100%; height: auto; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
