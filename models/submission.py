"""Check a NeuCo-Bench CSV against a dataset folder before submitting or scoring it.

NeuCo-Bench reads a CSV with a column ``id`` and one column per dimension
(names made of digits). It turns non-numeric cells and NaN into 0 without a
warning, so a broken file scores badly instead of failing. This check names
each problem: missing or unknown ids, wrong dimension columns, rows with the
wrong number of fields, values that are not finite float32 numbers.
"""

import argparse
import csv
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MissingFileError, PluginError
from ..raster.ssl4eo import ARCHIVE_SUFFIX, scan_dataset

logger = logging.getLogger(__name__)

_LISTED = 5
"""Ids or lines named in one message; the rest are counted."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class SubmissionCheck:
    """The result of :func:`check_submission`.

    Attributes:
        path: The CSV checked.
        rows: Data rows read.
        dimensions: Dimension columns found.
        problems: What makes the file invalid, one sentence each.
        notes: What is worth knowing but valid (excluded ids, unsorted rows).
    """

    path: str
    rows: int = 0
    dimensions: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def messages(self) -> list[str]:
        """Return the verdict, then every problem and note, as lines."""
        verdict = (f"{self.path}: valid NeuCo-Bench CSV, {self.rows} rows of {self.dimensions} dimensions."
                   if self.ok else f"{self.path}: {len(self.problems)} problem(s) found.")
        return [verdict, *(f"problem: {text}" for text in self.problems), *(f"note: {text}" for text in self.notes)]


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} and {len(items) - _LISTED} more"


def _check_header(header: list[str], dimensions: int | None, check: SubmissionCheck) -> list[int]:
    """Check the header; return the positions of the dimension columns in numeric order."""
    if "id" not in header:
        check.problems.append(f"the header has no column 'id' (it starts with {header[:3]}).")
        return []
    digits = [(int(name), position) for position, name in enumerate(header) if name.isdigit()]
    others = [name for name in header if name != "id" and not name.isdigit()]
    if others:
        check.problems.append(f"column(s) {_listed(others)} are neither 'id' nor a dimension number; NeuCo-Bench "
                              "would ignore them.")
    numbers = sorted(number for number, _ in digits)
    if numbers != list(range(len(numbers))):
        gaps = sorted(set(range(max(numbers, default=-1) + 1)) - set(numbers))
        check.problems.append(f"dimension columns must be 0 … N-1 without gaps or repeats; found {len(numbers)} "
                              f"columns, missing {_listed([str(gap) for gap in gaps]) or 'none'}.")
    check.dimensions = len(numbers)
    if dimensions is not None and len(numbers) != dimensions:
        check.problems.append(f"the file has {len(numbers)} dimension columns; expected {dimensions}.")
    return [position for _, position in sorted(digits)]


def _read_excluded(exclude_path: str | Path | None) -> set[str]:
    if exclude_path is None or not Path(exclude_path).is_file():
        return set()
    return {line.strip() for line in Path(exclude_path).read_text().splitlines() if line.strip()}


def check_submission(csv_path: str | Path, dataset_folder: str | Path | None = None,
                     dimensions: int | None = None, exclude_path: str | Path | None = None) -> SubmissionCheck:
    """Check a NeuCo-Bench CSV, optionally against the ids of a dataset folder.

    Args:
        csv_path: The CSV.
        dataset_folder: SSL4EO-S12 dataset folder whose ids must all appear,
            or None to check the file alone.
        dimensions: Required number of dimension columns, or None for any.
        exclude_path: Exclude file (one id per line); ids listed there may
            be absent from the CSV.

    Returns:
        The problems and notes found.

    Raises:
        MissingFileError: If the CSV does not exist.
        PluginError: If the dataset folder cannot be scanned.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise MissingFileError(f"INPUT: file '{path}' does not exist.")
    check = SubmissionCheck(str(path))
    with open(path, newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            check.problems.append("the file is empty; expected a header id,0,1,… and one row per id.")
            return check
        columns = _check_header(header, dimensions, check)
        id_position = header.index("id") if "id" in header else None
        ids: list[str] = []
        short, non_numeric, non_finite, suffixed = [], [], [], []
        for line, row in enumerate(reader, start=2):
            check.rows += 1
            if len(row) != len(header):
                short.append(f"line {line} ({len(row)} fields)")
                continue
            if id_position is None:
                continue
            identifier = row[id_position]
            if identifier.endswith((ARCHIVE_SUFFIX, ".zarr")):
                suffixed.append(identifier)
                identifier = identifier.replace(ARCHIVE_SUFFIX, "").replace(".zarr", "")
            ids.append(identifier)
            try:
                values = np.array([float(row[position]) for position in columns], dtype=np.float64)
            except ValueError:
                bad = next(row[position] for position in columns if not _is_number(row[position]))
                non_numeric.append(f"line {line} ('{bad}')")
                continue
            if not np.all(np.isfinite(values)) or np.any(np.abs(values) > _FLOAT32_MAX):
                non_finite.append(f"line {line} (id {identifier})")
    if short:
        check.problems.append(f"{len(short)} row(s) have a different number of fields than the header "
                              f"({len(header)}): {_listed(short)}.")
    if non_numeric:
        check.problems.append(f"{len(non_numeric)} row(s) have non-numeric values, which NeuCo-Bench would read "
                              f"as 0: {_listed(non_numeric)}.")
    if non_finite:
        check.problems.append(f"{len(non_finite)} row(s) have NaN, infinite or beyond-float32 values, which "
                              f"NeuCo-Bench would read as 0: {_listed(non_finite)}.")
    if suffixed:
        check.problems.append(f"{len(suffixed)} id(s) keep the archive suffix ({_listed(suffixed)}); write ids "
                              "without .zarr.zip.")
    duplicates = sorted(identifier for identifier, count in Counter(ids).items() if count > 1)
    if duplicates:
        check.problems.append(f"{len(duplicates)} id(s) occur more than once: {_listed(duplicates)}.")
    if ids != sorted(ids):
        check.notes.append("rows are not sorted by id (NeuCo-Bench does not need it; FusedEO writes them sorted).")
    if dataset_folder is not None:
        _check_ids(set(ids), dataset_folder, _read_excluded(exclude_path), check)
    return check


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_ids(ids: set[str], dataset_folder: str | Path, excluded: set[str], check: SubmissionCheck) -> None:
    """Compare the CSV's ids with the dataset's."""
    expected = set(scan_dataset(dataset_folder, "DATASET_FOLDER").ids)
    missing = sorted(expected - ids - excluded)
    unknown = sorted(ids - expected)
    if missing:
        check.problems.append(f"{len(missing)} of the {len(expected)} dataset ids are missing and not in the "
                              f"exclude file: {_listed(missing)}.")
    if unknown:
        check.problems.append(f"{len(unknown)} id(s) are not in the dataset folder '{dataset_folder}': "
                              f"{_listed(unknown)}.")
    listed = sorted((expected - ids) & excluded)
    if listed:
        check.notes.append(f"{len(listed)} dataset id(s) are absent and listed in the exclude file: "
                           f"{_listed(listed)}.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console check; return 0 when the CSV is valid, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="fusedeo-check-submission",
                                     description="Check a NeuCo-Bench CSV against an SSL4EO-S12 dataset folder.")
    parser.add_argument("csv", help="the NeuCo-Bench CSV")
    parser.add_argument("--dataset-folder", help="dataset folder whose ids must all appear")
    parser.add_argument("--dimensions", type=int, help="required number of dimension columns")
    parser.add_argument("--exclude-file", help="ids (one per line) allowed to be absent; default: "
                                               "<csv name>.exclude.txt next to the CSV when it exists")
    arguments = parser.parse_args(argv)
    exclude = arguments.exclude_file or Path(arguments.csv).with_name(f"{Path(arguments.csv).stem}.exclude.txt")
    try:
        check = check_submission(arguments.csv, arguments.dataset_folder, arguments.dimensions, exclude)
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in check.messages():
        print(line)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
