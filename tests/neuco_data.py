"""Small NeuCo-Bench inputs written into a test's temporary folder.

``write_benchmark`` makes a seeded embeddings CSV whose first dimensions carry
the labels (so probes score well above zero) and a labels folder with two
regression tasks on different subsets of the ids and one classification task.
"""

from pathlib import Path

import numpy as np


def write_embeddings_csv(path: Path, ids: list[str], values: np.ndarray, header: list[str] | None = None) -> Path:
    """Write an embeddings CSV: ``id`` then one column per dimension (names 0, 1, … unless given)."""
    names = header or ["id"] + [str(index) for index in range(values.shape[1])]
    lines = [",".join(names)]
    for row_id, row in zip(ids, values, strict=True):
        lines.append(",".join([row_id] + [f"{value:.6f}" for value in row]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_labels(folder: Path, file_name: str, rows: list[tuple[str, str]]) -> Path:
    """Write ``<folder>/<file_name>`` with ``id,label`` rows given as text."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text("id,label\n" + "".join(f"{row_id},{label}\n" for row_id, label in rows))
    return path


def write_benchmark(folder: Path, samples: int = 240, dim: int = 8, seed: int = 3) -> tuple[Path, Path]:
    """Write ``embeddings.csv`` and ``labels/`` for an end-to-end run.

    Tasks: ``alpha`` (regression on dimension 0, 200 ids), ``beta``
    (regression on dimensions 1 and 2, 180 other ids) and ``gamma``
    (classification by the sign of dimension 3, 200 ids). Embedding ids carry
    the ``.zarr.zip`` suffix and label ids do not.

    Returns:
        The CSV path and the labels folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((samples, dim))
    ids = [f"cube{index:04d}" for index in range(samples)]
    csv_path = write_embeddings_csv(folder / "embeddings.csv", [f"{row_id}.zarr.zip" for row_id in ids], values)
    labels = folder / "labels"
    alpha = rng.choice(samples, 200, replace=False)
    write_labels(labels, "alpha__regression.csv", [(ids[i], f"{3 * values[i, 0] + 0.3 * rng.standard_normal():.5f}") for i in alpha])
    beta = rng.choice(samples, 180, replace=False)
    write_labels(
        labels, "beta__regr.csv", [(ids[i], f"{values[i, 1] - values[i, 2] + 0.5 * rng.standard_normal():.5f}") for i in beta]
    )
    gamma = rng.choice(samples, 200, replace=False)
    write_labels(labels, "gamma__classification.csv", [(ids[i], str(int(values[i, 3] > 0))) for i in gamma])
    return csv_path, labels
