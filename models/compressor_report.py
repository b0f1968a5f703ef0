"""Self-contained HTML report of a compressor training run, with both curves and the chosen epoch."""

import base64
import html
import io

from ..errors import import_optional
from .autoencoder import Checkpoint


def curves_png(checkpoints: list[Checkpoint], chosen_epoch: int, proxy_kind: str) -> bytes:
    """Plot the held-out loss and the proxy score per checkpoint and return the PNG bytes.

    The figure is drawn on an Agg canvas object, so no global matplotlib
    backend is set inside QGIS.
    """
    import_optional("matplotlib", "drawing the compressor report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [point.epoch for point in checkpoints]
    figure = Figure(figsize=(7.0, 6.0), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes = figure.add_subplot(2, 1, 1)
    proxy_axes = figure.add_subplot(2, 1, 2, sharex=loss_axes)
    loss_axes.plot(epochs, [point.holdout_loss for point in checkpoints], marker="o", markersize=3,
                   label="held-out loss")
    loss_axes.plot(epochs, [point.train_loss for point in checkpoints], linestyle="--", linewidth=0.8,
                   label="training loss (with dropout)")
    loss_axes.set_ylabel("weighted per-block MSE")
    loss_axes.legend(loc="upper right")
    proxy_axes.plot(epochs, [point.proxy for point in checkpoints], marker="o", markersize=3, color="tab:green")
    proxy_axes.set_ylabel(f"proxy score ({proxy_kind})")
    proxy_axes.set_xlabel("epoch")
    for axes in (loss_axes, proxy_axes):
        axes.axvline(chosen_epoch, color="tab:red", linewidth=1.0, linestyle=":")
    chosen = next(point for point in checkpoints if point.epoch == chosen_epoch)
    proxy_axes.plot([chosen_epoch], [chosen.proxy], marker="*", markersize=14, color="tab:red",
                    label=f"chosen epoch {chosen_epoch}")
    proxy_axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_compressor_report(path: str, rows: list[tuple[str, str]], notes: list[str],
                            checkpoints: list[Checkpoint], chosen_epoch: int, proxy_kind: str) -> None:
    """Write the report as one HTML file with the curves embedded as a base64 PNG.

    Args:
        path: Destination ``.html`` path.
        rows: ``(name, value)`` pairs for the summary table.
        notes: Decisions that change results, listed under the table.
        checkpoints: Every scored checkpoint.
        chosen_epoch: Epoch of the exported checkpoint.
        proxy_kind: ``"labels"`` or ``"label-free"``.
    """
    image = base64.b64encode(curves_png(checkpoints, chosen_epoch, proxy_kind)).decode("ascii")
    table = "\n".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    note_items = "\n".join(f"<li>{html.escape(note)}</li>" for note in notes) or "<li>None.</li>"
    chosen_class = ' class="chosen"'
    checkpoint_rows = "\n".join(
        f"<tr{chosen_class if point.epoch == chosen_epoch else ''}><td>{point.epoch}</td>"
        f"<td>{point.holdout_loss:.6g}</td><td>{point.train_loss:.6g}</td><td>{point.proxy:.4f}</td></tr>"
        for point in checkpoints
    )
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>FusedEO compressor training</title>
<style>
body {{ font-family: sans-serif; max-width: 54em; margin: 2em auto; }}
th {{ text-align: left; padding-right: 1em; vertical-align: top; }}
td {{ font-family: monospace; word-break: break-all; padding-right: 1em; }}
tr.chosen td {{ font-weight: bold; color: #b00; }}
</style>
</head>
<body>
<h1>FusedEO compressor training</h1>
<table>
{table}
</table>
<h2>Decisions</h2>
<ul>
{note_items}
</ul>
<h2>Curves</h2>
<p>The exported checkpoint is the one with the best proxy score (red star and dotted line), not the one with
the lowest reconstruction loss.</p>
<img alt="Held-out loss and proxy score per epoch, chosen epoch marked" src="data:image/png;base64,{image}">
<h2>Checkpoints</h2>
<table>
<tr><th>epoch</th><th>held-out loss</th><th>training loss</th><th>proxy</th></tr>
{checkpoint_rows}
</table>
</body>
</html>
"""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(document)
