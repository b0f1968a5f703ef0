"""Self-contained HTML report of a trained probe, with a predicted-vs-true scatter plot."""

import base64
import html
import io
import logging

import numpy as np

from ..errors import import_optional
from .probes import CLASSIFICATION, Skill

logger = logging.getLogger(__name__)


def scatter_png(skill: Skill, task: str, label_name: str) -> bytes:
    """Plot held-out predictions against targets and return the PNG bytes.

    The figure is drawn on an Agg canvas object, so no global matplotlib
    backend is set inside QGIS.
    """
    import_optional("matplotlib", "drawing the probe report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 5.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    truth = skill.oof_true
    predicted = skill.oof_predicted
    if task == CLASSIFICATION:
        # Spread the two classes sideways so that overlapping points stay visible.
        jitter = np.random.default_rng(0).uniform(-0.08, 0.08, truth.size)
        axes.scatter(truth + jitter, predicted, s=12, alpha=0.6)
        axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        axes.set_xticks([0, 1])
        axes.set_xlabel(f"true class ({label_name})")
        axes.set_ylabel("held-out probability of class 1")
    else:
        axes.scatter(truth, predicted, s=12, alpha=0.6)
        if truth.size:
            low = float(min(truth.min(), predicted.min()))
            high = float(max(truth.max(), predicted.max()))
            axes.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
        axes.set_xlabel(f"true {label_name}")
        axes.set_ylabel(f"held-out prediction of {label_name}")
    axes.set_title(f"{skill.metric.upper()} {skill.mean:.3f} ± {skill.std:.3f}, Q {skill.q:.2f}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_probe_report(
    path: str,
    title: str,
    rows: list[tuple[str, str]],
    notes: list[str],
    skill: Skill,
    task: str,
    label_name: str,
) -> None:
    """Write the report as one HTML file with the plot embedded as base64 PNG.

    Args:
        path: Destination ``.html`` path.
        title: Report heading.
        rows: ``(name, value)`` pairs for the summary table.
        notes: Decisions and exclusions to list under the table.
        skill: Cross-validated skill, for the per-split scores and the plot.
        task: ``"regression"`` or ``"classification"``.
        label_name: Label description for axis titles.
    """
    image = base64.b64encode(scatter_png(skill, task, label_name)).decode("ascii")
    table = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    note_items = "\n".join(f"<li>{html.escape(note)}</li>" for note in notes) or "<li>None.</li>"
    scores = ", ".join(f"{score:.3f}" for score in skill.scores)
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 50em; margin: 2em auto; }}
th {{ text-align: left; padding-right: 1em; vertical-align: top; }}
td {{ font-family: monospace; word-break: break-all; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<table>
{table}
</table>
<h2>Decisions and exclusions</h2>
<ul>
{note_items}
</ul>
<h2>Held-out predictions</h2>
<p>Each point is a sample held out in at least one split, at its mean held-out prediction.</p>
<img alt="Predicted against true values" src="data:image/png;base64,{image}">
<h2>Score per split ({html.escape(skill.metric)})</h2>
<p>{scores}</p>
</body>
</html>
"""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(document)
