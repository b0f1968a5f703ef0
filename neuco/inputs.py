"""Read the NeuCo-Bench inputs: the embeddings CSV, the labels folder and the exclude file.

The rules are those of NeuCo-Bench (``benchmark/data/embeddings.py`` and
``benchmark/data/labels.py`` in github.com/embed2scale/NeuCo-Bench):

- Embeddings: a CSV with an ``id`` column. The dimension columns are those
  whose names are all digits, in numeric order; without any, every other
  column is a dimension. ``.zarr.zip`` and then ``.zarr`` are removed from
  ids. Cells that are not numbers become NaN and NaN becomes 0 (here also
  infinite values, which the reference keeps). Fewer columns
  than the requested embedding dimension are zero-padded on the right.
- Standardisation: one mean and one standard deviation over all values of
  the rows whose ids have a label in any task (after padding).
- Labels: one ``<task>__<type>.csv`` per task with ``id`` and ``label``
  columns; rows with an empty label are skipped. Only ids present in both
  files are used, in the order of the label file. Labels are min-max scaled
  to [0, 1] per task.

FusedEO differs where the reference fails or silently misreads. Ids are read
as text, because the reference parses an all-numeric id column as integers
and so drops leading zeros. Label ids and excluded ids are stripped like
embedding ids, and NaN labels are skipped like empty ones. Duplicated ids,
unknown task types and unreadable values are errors that name the file, line
and column.
"""

import csv
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError, import_optional
from ..reporting import Reporter

ID_COLUMN = "id"
LABEL_COLUMN = "label"
TASK_TYPES: dict[str, str] = {
    "regression": "regression",
    "regr": "regression",
    "classification": "classification",
    "cls": "classification",
}
"""Task type spellings accepted in label file names, mapped to the two task types."""

MIN_TASK_SAMPLES = 20
"""Fewest matched samples a task needs: 10 % held out must leave 2 samples to score."""


@dataclass(frozen=True)
class LabelFile:
    """The labelled rows of one ``<task>__<type>.csv`` file."""

    task_name: str
    task_type: str  # "regression" or "classification"
    path: Path
    ids: list[str]
    labels: np.ndarray  # (rows,) float64, in file order
    skipped_rows: int  # rows with an empty or NaN label
    repeated_ids: list[tuple[str, int, int]] = field(default_factory=list)  # (id, first line, repeating line)


@dataclass(frozen=True)
class Embeddings:
    """Embedding vectors of the rows kept from the CSV, in file order."""

    path: Path
    ids: list[str]
    values: np.ndarray  # (rows, dim) float32
    file_dim: int  # dimension columns in the file, before padding


@dataclass(frozen=True)
class TaskData:
    """One task ready to probe: rows of the embedding matrix and their labels."""

    name: str
    task_type: str
    source: Path
    rows: np.ndarray  # (samples,) int64 indices into Embeddings.values
    labels: np.ndarray  # (samples,) float64, normalised if requested
    label_min: float  # before normalisation
    label_max: float


def strip_id(raw_id: str) -> str:
    """Remove ``.zarr.zip`` and then ``.zarr`` from an id, wherever they occur, as NeuCo-Bench does."""
    if ".zarr" not in raw_id:
        return raw_id
    return raw_id.replace(".zarr.zip", "").replace(".zarr", "")


def parse_label_file_name(path: Path) -> tuple[str, str]:
    """Split ``<task>__<type>.csv`` into the task name and the task type.

    Raises:
        InputError: If the name has no ``__`` or the type is unknown.
    """
    task_name, separator, type_name = path.stem.partition("__")
    if not separator or not task_name:
        raise InputError(
            f"labels file {path}: the name must be <task>__<type>.csv, for example "
            "biomass_mean__regression.csv; rename the file or move it out of the labels folder."
        )
    task_type = TASK_TYPES.get(type_name.lower())
    if task_type is None:
        raise InputError(
            f"labels file {path}: task type '{type_name}' is unknown; expected one of "
            f"{', '.join(TASK_TYPES)} after the '__' in the file name."
        )
    return task_name, task_type


def read_label_file(path: Path) -> LabelFile:
    """Read the labelled rows of one labels CSV.

    Raises:
        InputError: If the name is not ``<task>__<type>.csv``, a column is
            missing, an id is empty or a label is not a finite number.
    """
    task_name, task_type = parse_label_file_name(path)
    ids: list[str] = []
    labels: list[float] = []
    skipped_rows = 0
    first_lines: dict[str, int] = {}
    repeated_ids: list[tuple[str, int, int]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for column in (ID_COLUMN, LABEL_COLUMN):
            if column not in header:
                separator_hint = (
                    " The header looks separated by semicolons or tabs; label files are read as comma-separated."
                    if len(header) == 1 and any(mark in header[0] for mark in ";\t")
                    else ""
                )
                raise InputError(
                    f"labels file {path}: no '{column}' column in the header "
                    f"(columns: {', '.join(header) or 'none'}); the file needs 'id' and 'label' columns."
                    f"{separator_hint}"
                )
        id_index, label_index = header.index(ID_COLUMN), header.index(LABEL_COLUMN)
        for row in reader:
            if not row:
                continue
            text = row[label_index] if label_index < len(row) else ""
            if not text or text.isspace():
                skipped_rows += 1
                continue
            try:
                label = float(text)
            except ValueError:
                # Line numbers count the header as line 1.
                raise InputError(
                    f"labels file {path}, line {reader.line_num}, column 'label': '{text}' is not a number."
                ) from None
            if label != label:  # NaN
                skipped_rows += 1
                continue
            if math.isinf(label):
                raise InputError(
                    f"labels file {path}, line {reader.line_num}, column 'label': '{text}' is not finite."
                )
            raw_id = row[id_index] if id_index < len(row) else ""
            if not raw_id:
                raise InputError(f"labels file {path}, line {reader.line_num}, column 'id': the id is empty.")
            row_id = strip_id(raw_id)
            first_line = first_lines.setdefault(row_id, reader.line_num)
            if first_line != reader.line_num:
                repeated_ids.append((row_id, first_line, reader.line_num))
            ids.append(row_id)
            labels.append(label)
    return LabelFile(
        task_name, task_type, path, ids, np.asarray(labels, dtype=np.float64), skipped_rows, repeated_ids
    )


def label_file_paths(folder: Path) -> list[Path]:
    """Return the ``*.csv`` files in ``folder`` (not its subfolders), sorted by name.

    Raises:
        MissingFileError: If the folder does not exist.
        InputError: If it contains no CSV file.
    """
    if not folder.is_dir():
        if folder.exists():
            raise InputError(f"labels folder {folder} is a file; give the folder that contains the label CSV files.")
        raise MissingFileError(f"labels folder {folder} does not exist.")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise InputError(f"labels folder {folder} contains no .csv file; add one <task>__<type>.csv per task.")
    return paths


def check_task_filter(task_filter: tuple[str, ...] | None, task_names: set[str], folder: Path) -> None:
    """Raise InputError if the filter names a task that has no label file."""
    unknown = [task for task in task_filter or () if task not in task_names]
    if unknown:
        separator_hint = (
            " Separate task names with commas." if any(mark in task for task in unknown for mark in "; ") else ""
        )
        raise InputError(
            f"TASKS (--tasks): {', '.join(unknown)} not found in {folder}; the tasks there are "
            f"{', '.join(sorted(task_names))}.{separator_hint}"
        )


def read_labels_folder(folder: Path, reporter: Reporter) -> list[LabelFile]:
    """Read every ``*.csv`` in ``folder`` (not its subfolders), sorted by task name.

    Raises:
        MissingFileError: If the folder does not exist.
        InputError: If it contains no CSV file, a file is invalid, or two
            files name the same task.
    """
    label_files = [read_label_file(path) for path in label_file_paths(folder)]
    by_task: dict[str, Path] = {}
    for label_file in label_files:
        if label_file.task_name in by_task:
            raise InputError(
                f"labels folder {folder}: task '{label_file.task_name}' is named by both "
                f"{by_task[label_file.task_name].name} and {label_file.path.name}; keep one file per task."
            )
        by_task[label_file.task_name] = label_file.path
        if label_file.skipped_rows:
            reporter.warning(
                f"{label_file.path.name}: skipped {label_file.skipped_rows} rows with an empty label."
            )
        if label_file.repeated_ids:
            row_id, first_line, line = label_file.repeated_ids[0]
            reporter.warning(
                f"{label_file.path.name}: {len(label_file.repeated_ids)} "
                f"{'row repeats' if len(label_file.repeated_ids) == 1 else 'rows repeat'} an id of an earlier row "
                f"(for example '{row_id}' on lines {first_line} and {line}). Each row counts as a sample, as in "
                "NeuCo-Bench; remove the repeats unless they are intended."
            )
    return sorted(label_files, key=lambda label_file: label_file.task_name)


def read_exclude_file(path: Path) -> set[str]:
    """Read ids to leave out, one per line; blank lines are ignored.

    Raises:
        MissingFileError: If the file does not exist.
    """
    if path.is_dir():
        raise InputError(f"exclude file {path} is a folder; give the path of a text file with one id per line.")
    if not path.is_file():
        raise MissingFileError(f"exclude file {path} does not exist.")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return {strip_id(line.strip()) for line in lines if line.strip()}


def embedding_columns(columns: list[str]) -> list[str]:
    """Return the dimension columns: all-digit names in numeric order, else every non-id column."""
    digit_columns = [name for name in columns if name.isascii() and name.isdigit()]
    if digit_columns:
        return sorted(digit_columns, key=int)
    return [name for name in columns if name != ID_COLUMN]


def read_csv_header(path: Path) -> list[str]:
    """Return the column names of a CSV file's first line.

    Raises:
        MissingFileError: If the file does not exist.
        InputError: If the file is empty or names a column twice.
    """
    if path.is_dir():
        raise InputError(f"embeddings CSV {path} is a folder; give the path of the CSV file.")
    if not path.is_file():
        raise MissingFileError(f"embeddings CSV {path} does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise InputError(f"embeddings CSV {path} is empty; expected a header line with 'id' and the dimensions.")
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(
                f"embeddings CSV {path}, line 1, column {position}: the name '{name}' appears twice in the header."
            )
        seen.add(name)
    return header


def check_embeddings_header(path: Path, embedding_dim: int | None = None) -> tuple[list[str], list[str]]:
    """Read the header of an embeddings CSV and return all columns and the dimension columns.

    Raises:
        MissingFileError: If the file does not exist.
        InputError: If the header has no ``id`` column or no dimension
            column, or more dimension columns than ``embedding_dim``.
    """
    header = read_csv_header(path)
    if ID_COLUMN not in header:
        preview = ", ".join(header[:8]) + (", …" if len(header) > 8 else "")
        raise InputError(
            f"embeddings CSV {path}: no 'id' column in the header (columns: {preview}); the first line "
            "must name an 'id' column and one column per dimension (0, 1, 2, …)."
        )
    columns = embedding_columns(header)
    if not columns:
        raise InputError(f"embeddings CSV {path}: the header has an 'id' column but no dimension column.")
    if embedding_dim is not None and len(columns) > embedding_dim:
        raise InputError(
            f"embeddings CSV {path}: {len(columns)} dimension columns ('{columns[0]}' … '{columns[-1]}') "
            f"but the embedding dimension is {embedding_dim}; raise the embedding dimension to at least "
            f"{len(columns)} or leave it empty to use the file's width."
        )
    return header, columns


def read_embeddings(
    path: Path,
    keep_ids: set[str],
    reporter: Reporter,
    embedding_dim: int | None = None,
    exclude_ids: set[str] | None = None,
) -> Embeddings:
    """Read the rows of an embeddings CSV whose ids are in ``keep_ids``.

    Args:
        path: The embeddings CSV.
        keep_ids: Ids to keep (after stripping); the others are dropped.
        reporter: Receives what was dropped, padded or replaced.
        embedding_dim: Width to zero-pad to; None keeps the file's width.
        exclude_ids: Ids to drop even when they have labels.

    Returns:
        The kept rows in file order, not standardised.

    Raises:
        MissingFileError: If the file does not exist.
        InputError: If the header has no ``id`` column or no dimension
            column, there are more dimension columns than ``embedding_dim``,
            or a kept id appears twice.
    """
    header, columns = check_embeddings_header(path, embedding_dim)
    ignored = [name for name in header if name != ID_COLUMN and name not in set(columns)]
    if ignored:
        reporter.info(f"Embeddings CSV: columns that are not dimensions are ignored: {', '.join(ignored[:10])}.")

    plain = None
    if header == [ID_COLUMN, *(str(index) for index in range(len(columns)))]:
        from . import csv_kernel

        # Loading the compiled parser holds the interpreter lock and reading the file does not, so both run at once.
        with ThreadPoolExecutor(max_workers=1) as executor:
            loaded = executor.submit(csv_kernel.load)
            data = path.read_bytes()
            loaded.result()
        plain = csv_kernel.read_plain_csv(data, len(columns))
    frame = None
    if plain is not None:
        raw_ids, all_values = plain
    else:
        # Quotes, empty or text cells, or another column order: pandas reads the file and names bad cells.
        # The "legacy" float parser is about a third faster than the default one. It can differ in the last
        # bit of a float64; after the conversion to float32, all 12.3 million values of the CSV made by
        # benchmarks/neuco_agreement.py come out identical.
        pandas = import_optional("pandas", "reading the embeddings CSV")
        frame = pandas.read_csv(
            path, dtype={ID_COLUMN: str}, usecols=[ID_COLUMN, *columns], float_precision="legacy", low_memory=False
        )
        raw_ids = frame[ID_COLUMN].fillna("").tolist()
    ids = [strip_id(raw_id) for raw_id in raw_ids]
    keep = np.fromiter((row_id in keep_ids for row_id in ids), dtype=bool, count=len(ids))
    if exclude_ids:
        excluded = np.fromiter((row_id in exclude_ids for row_id in ids), dtype=bool, count=len(ids))
        reporter.info(f"Excluded {int((keep & excluded).sum())} labelled ids listed in the exclude file.")
        keep &= ~excluded
    if not keep.any():
        reason = "has a label and is not in the exclude file" if exclude_ids else "has a label"
        raise InputError(
            f"embeddings CSV {path}: none of its {len(ids)} ids {reason} (first ids: {ids[:3]}). "
            "Ids are compared with the label files' ids after removing '.zarr.zip' and '.zarr'."
        )
    kept_rows = np.flatnonzero(keep)
    kept_ids = [ids[row] for row in kept_rows.tolist()]
    _check_unique(kept_ids, kept_rows, path)
    if frame is None:
        values = all_values[kept_rows]
    else:
        values = _numeric_values(frame[columns].iloc[kept_rows], path, reporter, pandas)
    if embedding_dim is not None and embedding_dim > values.shape[1]:
        reporter.info(
            f"Embeddings CSV has {values.shape[1]} dimensions; zero-padded to {embedding_dim}."
        )
        values = np.pad(values, ((0, 0), (0, embedding_dim - values.shape[1])))
    reporter.info(
        f"Read {len(kept_ids)} labelled embeddings of {len(ids)} rows, {values.shape[1]} dimensions, from {path.name}."
    )
    return Embeddings(path, kept_ids, values, len(columns))


def _check_unique(kept_ids: list[str], kept_rows: np.ndarray, path: Path) -> None:
    """Raise InputError naming the lines of the first kept id that appears twice."""
    seen: set[str] = set()
    for row_id in kept_ids:
        if row_id in seen:
            # Rows count from the line after the header, so row r is on line r + 2.
            lines = [str(row + 2) for row, other in zip(kept_rows, kept_ids, strict=True) if other == row_id][:5]
            raise InputError(
                f"embeddings CSV {path}: id '{row_id}' appears on lines {', '.join(lines)}; each id needs one row."
            )
        seen.add(row_id)


def _numeric_values(frame, path: Path, reporter: Reporter, pandas) -> np.ndarray:  # noqa: ANN001 (pandas objects)
    """Convert dimension columns to float32, reading non-numbers and NaN as 0."""
    text_columns = [name for name in frame.columns if not pandas.api.types.is_numeric_dtype(frame[name])]
    if text_columns:
        converted = frame[text_columns].apply(pandas.to_numeric, errors="coerce")
        bad = converted.isna() & frame[text_columns].notna()
        if bad.to_numpy().any():
            column = bad.any().idxmax()
            row_label = bad[column].idxmax()
            count = int(bad.to_numpy().sum())
            reporter.warning(
                f"embeddings CSV {path}: {_cells(count)} not a number "
                f"(for example line {row_label + 2}, column '{column}': '{frame.at[row_label, column]}')."
            )
        frame = frame.copy()
        frame[text_columns] = converted
    values = frame.to_numpy(dtype=np.float32)
    # The reference keeps infinite values, which turn every standardised value into NaN.
    missing = ~np.isfinite(values)
    if missing.any():
        reporter.warning(
            f"embeddings CSV {path}: {_cells(int(missing.sum()))} empty, NaN, infinite or not a number; "
            "such cells are read as 0."
        )
        values[missing] = 0.0
    return values


def _cells(count: int) -> str:
    """Return "1 cell is" or "N cells are"."""
    return "1 cell is" if count == 1 else f"{count} cells are"


def standardize(values: np.ndarray, in_place: bool = False) -> tuple[np.ndarray, float, float]:
    """Subtract the mean of all values and divide by their standard deviation.

    One mean and one standard deviation are computed over the whole matrix,
    not per dimension; a standard deviation of 0 is replaced by 1.

    Args:
        values: The embeddings.
        in_place: Overwrite ``values`` when it is a float32 array, which
            saves a copy of the matrix.

    Returns:
        The standardised float32 matrix, the mean and the standard deviation.
    """
    mean = float(values.mean(dtype=np.float64))
    std = _standard_deviation(values, mean)
    if std == 0.0:
        std = 1.0
    out = values if in_place and values.dtype == np.float32 else np.empty(values.shape, dtype=np.float32)
    np.subtract(values, np.float32(mean), out=out, casting="same_kind")
    np.divide(out, np.float32(std), out=out)
    return out, mean, std


STATISTICS_CHUNK = 2**20
"""Values per float64 block when summing squared deviations: 8 MB, which stays in the CPU cache."""


def _standard_deviation(values: np.ndarray, mean: float) -> float:
    """Return the population standard deviation of all values around ``mean``, summed in float64 blocks.

    ``np.std`` makes a float64 copy of the whole matrix first, which took
    longer than the sums themselves for a 12 000 × 1024 matrix.
    """
    flat = values.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, STATISTICS_CHUNK):
        deviations = flat[start : start + STATISTICS_CHUNK].astype(np.float64) - mean
        total += float(np.dot(deviations, deviations))
    return math.sqrt(total / flat.size) if flat.size else 0.0


def assemble_tasks(
    embeddings: Embeddings,
    label_files: list[LabelFile],
    reporter: Reporter,
    normalize_labels: bool = True,
) -> list[TaskData]:
    """Match each label file to the embedding rows and normalise its labels.

    Tasks with fewer than :data:`MIN_TASK_SAMPLES` matched ids or constant
    labels are skipped with a warning.

    Raises:
        InputError: If no task shares an id with the embeddings, or a
            classification task has labels other than two classes.
    """
    row_of_id = {row_id: index for index, row_id in enumerate(embeddings.ids)}
    tasks = []
    for label_file in label_files:
        rows = np.fromiter((row_of_id.get(row_id, -1) for row_id in label_file.ids), dtype=np.int64)
        matched = rows >= 0
        rows, labels = rows[matched], label_file.labels[matched]
        if len(rows) < len(label_file.ids):
            reporter.info(
                f"{label_file.task_name}: {len(rows)} of {len(label_file.ids)} labelled ids have an embedding."
            )
        if len(rows) < MIN_TASK_SAMPLES:
            examples = (
                f" (first ids of {label_file.path.name}: {label_file.ids[:3]}; first embedding ids: "
                f"{embeddings.ids[:3]}; ids are compared after removing '.zarr.zip' and '.zarr')"
                if not len(rows)
                else ""
            )
            reporter.warning(
                f"{label_file.task_name}: skipped, {len(rows)} labelled ids have an embedding "
                f"and at least {MIN_TASK_SAMPLES} are needed{examples}."
            )
            continue
        raw_labels = labels
        label_min, label_max = float(labels.min()), float(labels.max())
        if label_min == label_max:
            reporter.warning(f"{label_file.task_name}: skipped, every label equals {label_min}.")
            continue
        if normalize_labels:
            labels = (labels - label_min) / (label_max - label_min)
        if label_file.task_type == "classification":
            _check_binary(labels, raw_labels, label_file.path, normalize_labels)
        tasks.append(
            TaskData(label_file.task_name, label_file.task_type, label_file.path, rows, labels, label_min, label_max)
        )
    if not tasks and label_files and not any(
        any(row_id in row_of_id for row_id in label_file.ids) for label_file in label_files
    ):
        label_ids = label_files[0].ids[:3]
        raise InputError(
            f"embeddings CSV {embeddings.path} and the label files share no ids (first embedding ids: "
            f"{embeddings.ids[:3] or 'none kept'}; first ids of {label_files[0].path.name}: {label_ids}). "
            "Ids are compared after removing '.zarr.zip' and '.zarr'."
        )
    return tasks


def _check_binary(labels: np.ndarray, raw_labels: np.ndarray, path: Path, normalized: bool) -> None:
    """Raise InputError unless classification labels are 0 and 1; the message quotes the file's values."""
    if np.isin(np.unique(labels), (0.0, 1.0)).all():
        return
    values = np.unique(raw_labels)
    preview = ", ".join(f"{value:g}" for value in values[:6]) + (", …" if len(values) > 6 else "")
    scaled = " after min-max scaling" if normalized else ""
    raise InputError(
        f"labels file {path}: a classification task needs labels 0 and 1{scaled}, "
        f"but it has {len(values)} distinct values ({preview}). Use two classes, or rename the file to "
        f"{path.name.partition('__')[0]}__regression.csv to score it as a regression task."
    )
