"""NeuCo-Bench CSV files of a dataset run: row format, side files, resume state.

A run writes ``<name>.csv`` (``id``, ``0`` … ``N-1``), ``<name>.exclude.txt``
(skipped ids, one per line) and ``<name>.provenance.json`` next to each other.
A resumable run appends rows to the CSV; :func:`read_resume_state` returns
the ids an earlier run of the same embedding space wrote.
"""

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LayoutMismatchError


def exclude_path_for(output_csv: str | Path) -> Path:
    """Return the exclude file that belongs to ``output_csv``."""
    path = Path(output_csv)
    return path.with_name(f"{path.stem}.exclude.txt")


def provenance_path_for(output_csv: str | Path) -> Path:
    """Return the provenance file that belongs to ``output_csv``."""
    path = Path(output_csv)
    return path.with_name(f"{path.stem}.provenance.json")


def format_row(identifier: str, values: np.ndarray) -> list[str]:
    """Return a CSV row; ``.9g`` keeps every float32 exact when read back."""
    return [identifier, *(f"{value:.9g}" for value in np.asarray(values, dtype=np.float32))]


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically (temporary file, then rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(temporary, path)


def write_exclude(path: Path, skipped: dict[str, str]) -> None:
    """Write the skipped ids, one per line, as NeuCo-Bench reads exclude files."""
    path.write_text("".join(f"{identifier}\n" for identifier in sorted(skipped)))


def read_resume_state(csv_path: Path, provenance_path: Path, fingerprint: str, s2_offset: str,
                  dimensions: int) -> set[str]:
    """Return the ids an earlier run of the same embedding space wrote to ``csv_path``.

    A last line without a line end (a run killed while writing) is cut off.

    Raises:
        LayoutMismatchError: If the file belongs to another embedding space or S2 offset.
        InputError: If the file exists without provenance or is not a CSV this run wrote.
    """
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return set()
    if not provenance_path.is_file():
        raise InputError(f"OUTPUT_CSV '{csv_path}' exists, but its provenance file '{provenance_path.name}' "
                         "does not, so its rows cannot be checked for resuming. Delete the CSV or choose "
                         "another OUTPUT_CSV.")
    try:
        record = json.loads(provenance_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"OUTPUT_CSV: provenance file '{provenance_path}' cannot be read ({err}).") from err
    if record.get("embedding_fingerprint") != fingerprint:
        raise LayoutMismatchError(
            f"OUTPUT_CSV '{csv_path}' contains embeddings of fingerprint "
            f"{str(record.get('embedding_fingerprint'))[:16]}, but this run's embedding space is "
            f"{fingerprint[:16]}. Resume with the same EMBEDDING_MODEL or COMPRESSOR, or choose another OUTPUT_CSV."
        )
    if record.get("s2_offset") != s2_offset:
        raise LayoutMismatchError(f"OUTPUT_CSV '{csv_path}' was written with S2_OFFSET={record.get('s2_offset')}; "
                                  f"this run has S2_OFFSET={s2_offset}. Use the same value to resume.")
    content = csv_path.read_bytes()
    if not content.endswith(b"\n"):
        content = content[: content.rfind(b"\n") + 1]
        csv_path.write_bytes(content)
    lines = list(csv.reader(content.decode().splitlines()))
    header = ["id", *(str(index) for index in range(dimensions))]
    if not lines or lines[0] != header:
        raise InputError(f"OUTPUT_CSV '{csv_path}' does not start with the header id,0,…,{dimensions - 1}; it "
                         "was not written by this run. Delete it or choose another OUTPUT_CSV.")
    ids = set()
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != dimensions + 1:
            raise InputError(f"OUTPUT_CSV '{csv_path}' line {number} has {len(row)} fields; expected "
                             f"{dimensions + 1}. Delete the file to start again.")
        ids.add(row[0])
    return ids


def sort_rows_by_id(csv_path: Path) -> None:
    """Rewrite the CSV sorted by id when resumed rows left it out of order."""
    with open(csv_path, newline="") as file:
        lines = list(csv.reader(file))
    header, rows = lines[0], lines[1:]
    ids = [row[0] for row in rows]
    if ids == sorted(ids):
        return
    temporary = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.partial")
    with open(temporary, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(sorted(rows, key=lambda row: row[0]))
    os.replace(temporary, csv_path)
