"""Reading NeuCo-Bench inputs: ids, columns, padding, NaN, labels and the errors for bad files."""

from pathlib import Path

import numpy as np
import pytest
from neuco_data import write_embeddings_csv, write_labels

from fusedeo.errors import InputError, MissingFileError
from fusedeo.neuco import inputs
from fusedeo.reporting import LoggingReporter


@pytest.fixture()
def reporter() -> LoggingReporter:
    return LoggingReporter("test")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc.zarr.zip", "abc"),
        ("abc.zarr", "abc"),
        ("abc", "abc"),
        ("a.zarr.zip.b", "a.b"),  # removed wherever it occurs, as in the reference
        ("0042.zarr.zip", "0042"),
    ],
)
def test_strip_id(raw, expected):
    assert inputs.strip_id(raw) == expected


def test_embedding_columns_digit_names_sorted_numerically():
    assert inputs.embedding_columns(["id", "extra", "10", "2", "0", "1"]) == ["0", "1", "2", "10"]


def test_embedding_columns_without_digit_names_uses_all_others():
    assert inputs.embedding_columns(["feature_a", "id", "feature_b"]) == ["feature_a", "feature_b"]


def test_read_embeddings_strips_ids_and_keeps_labelled_rows(tmp_path, reporter):
    path = write_embeddings_csv(
        tmp_path / "e.csv", ["a.zarr.zip", "b.zarr", "c"], np.arange(6, dtype=float).reshape(3, 2)
    )
    embeddings = inputs.read_embeddings(path, {"a", "c"}, reporter)
    assert embeddings.ids == ["a", "c"]
    np.testing.assert_array_equal(embeddings.values, [[0, 1], [4, 5]])
    assert embeddings.values.dtype == np.float32


def test_read_embeddings_reads_ids_as_text(tmp_path, reporter):
    path = write_embeddings_csv(tmp_path / "e.csv", ["0042", "0043"], np.ones((2, 2)))
    embeddings = inputs.read_embeddings(path, {"0042", "0043"}, reporter)
    assert embeddings.ids == ["0042", "0043"]


def test_read_embeddings_ignores_columns_that_are_not_dimensions(tmp_path, reporter):
    path = tmp_path / "e.csv"
    path.write_text("id,split,1,0\na,train,1.5,0.5\n")
    embeddings = inputs.read_embeddings(path, {"a"}, reporter)
    np.testing.assert_array_equal(embeddings.values, [[0.5, 1.5]])
    assert embeddings.file_dim == 2


def test_read_embeddings_zero_pads_to_embedding_dim(tmp_path, reporter):
    path = write_embeddings_csv(tmp_path / "e.csv", ["a", "b"], np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    embeddings = inputs.read_embeddings(path, {"a", "b"}, reporter, embedding_dim=5)
    np.testing.assert_array_equal(embeddings.values, [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0]])
    assert embeddings.file_dim == 3


def test_read_embeddings_nan_and_text_cells_become_zero(tmp_path, reporter):
    path = tmp_path / "e.csv"
    path.write_text("id,0,1,2\na,1.0,,nan\nb,abc,2.0,3.0\nc,inf,4.0,5.0\n")
    embeddings = inputs.read_embeddings(path, {"a", "b", "c"}, reporter)
    np.testing.assert_array_equal(embeddings.values, [[1, 0, 0], [0, 2, 3], [0, 4, 5]])
    warnings = [text for level, text in reporter.messages if level == "warning"]
    assert any("1 cell is not a number" in text and "'abc'" in text for text in warnings)
    assert any("4 cells are empty, NaN, infinite or not a number; such cells are read as 0" in text for text in warnings)


def test_read_embeddings_exclude_ids(tmp_path, reporter):
    path = write_embeddings_csv(tmp_path / "e.csv", ["a", "b", "c"], np.eye(3))
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("b.zarr.zip\n\n")
    embeddings = inputs.read_embeddings(path, {"a", "b", "c"}, reporter, exclude_ids=inputs.read_exclude_file(exclude))
    assert embeddings.ids == ["a", "c"]


def test_standardize_uses_global_statistics():
    values = np.array([[0.0, 10.0], [2.0, 20.0]], dtype=np.float32)
    standardized, mean, std = inputs.standardize(values)
    assert mean == pytest.approx(8.0)
    assert std == pytest.approx(np.std([0.0, 10.0, 2.0, 20.0]))
    np.testing.assert_allclose(standardized, (values - 8.0) / std, rtol=1e-6)


def test_standardize_constant_values_divides_by_one():
    standardized, _, std = inputs.standardize(np.full((2, 2), 3.0, dtype=np.float32))
    assert std == 1.0
    np.testing.assert_array_equal(standardized, np.zeros((2, 2)))


def test_read_label_file_skips_empty_labels(tmp_path):
    path = write_labels(tmp_path, "biomass__regression.csv", [("a", "1.5"), ("b", ""), ("c", "nan"), ("d", "2")])
    label_file = inputs.read_label_file(path)
    assert label_file.task_name == "biomass"
    assert label_file.task_type == "regression"
    assert label_file.ids == ["a", "d"]
    np.testing.assert_array_equal(label_file.labels, [1.5, 2.0])
    assert label_file.skipped_rows == 2


def test_repeated_label_ids_kept_with_warning(tmp_path, caplog):
    rows = [("a", "1"), ("b", "0"), ("a.zarr.zip", "0"), ("c", "1"), ("b", "1")]
    write_labels(tmp_path, "crop__classification.csv", rows)
    (label_file,) = inputs.read_labels_folder(tmp_path, LoggingReporter("test"))
    assert label_file.ids == ["a", "b", "a", "c", "b"]
    assert label_file.repeated_ids == [("a", 2, 4), ("b", 3, 6)]
    assert "2 rows repeat an id of an earlier row (for example 'a' on lines 2 and 4)" in caplog.text


@pytest.mark.parametrize(
    ("file_name", "task_type"),
    [("t__regression.csv", "regression"), ("t__regr.csv", "regression"), ("t__cls.csv", "classification")],
)
def test_task_type_spellings(tmp_path, file_name, task_type):
    assert inputs.parse_label_file_name(tmp_path / file_name) == ("t", task_type)


def _assemble(tmp_path, reporter, label_rows, file_name="t__regression.csv", ids=None, normalize=True):
    ids = ids or [f"s{index}" for index in range(30)]
    csv_path = write_embeddings_csv(tmp_path / "e.csv", ids, np.arange(len(ids) * 2, dtype=float).reshape(-1, 2))
    label_file = inputs.read_label_file(write_labels(tmp_path / "labels", file_name, label_rows))
    embeddings = inputs.read_embeddings(csv_path, set(label_file.ids), reporter)
    return inputs.assemble_tasks(embeddings, [label_file], reporter, normalize_labels=normalize)


def test_assemble_tasks_min_max_normalises_labels(tmp_path, reporter):
    rows = [(f"s{index}", str(10 + 2 * index)) for index in range(25)]
    (task,) = _assemble(tmp_path, reporter, rows)
    assert task.labels.min() == 0.0
    assert task.labels.max() == 1.0
    assert (task.label_min, task.label_max) == (10.0, 58.0)


def test_assemble_tasks_keeps_label_file_order(tmp_path, reporter):
    rows = [(f"s{index}", str(index)) for index in reversed(range(25))]
    (task,) = _assemble(tmp_path, reporter, rows, normalize=False)
    np.testing.assert_array_equal(task.rows, np.arange(24, -1, -1))
    np.testing.assert_array_equal(task.labels, np.arange(24, -1, -1))


def test_assemble_tasks_skips_task_with_too_few_samples(tmp_path, reporter):
    assert _assemble(tmp_path, reporter, [(f"s{index}", str(index)) for index in range(5)]) == []
    assert any("skipped" in text for level, text in reporter.messages if level == "warning")


def test_assemble_tasks_skips_constant_labels(tmp_path, reporter):
    assert _assemble(tmp_path, reporter, [(f"s{index}", "1") for index in range(25)]) == []


# Errors for bad files: each names the file and the row or column.


def test_error_embeddings_without_id_column(tmp_path, reporter):
    path = tmp_path / "e.csv"
    path.write_text("name,0,1\na,1,2\n")
    with pytest.raises(InputError, match=r"e\.csv: no 'id' column in the header \(columns: name, 0, 1\)"):
        inputs.read_embeddings(path, {"a"}, reporter)


def test_error_more_columns_than_embedding_dim(tmp_path, reporter):
    path = write_embeddings_csv(tmp_path / "e.csv", ["a"], np.ones((1, 4)))
    with pytest.raises(InputError, match=r"4 dimension columns \('0' … '3'\) but the embedding dimension is 3"):
        inputs.read_embeddings(path, {"a"}, reporter, embedding_dim=3)


def test_error_duplicated_id(tmp_path, reporter):
    path = write_embeddings_csv(tmp_path / "e.csv", ["a", "b", "a.zarr.zip"], np.ones((3, 2)))
    with pytest.raises(InputError, match=r"id 'a' appears on lines 2, 4"):
        inputs.read_embeddings(path, {"a", "b"}, reporter)


def test_error_duplicated_column_name(tmp_path, reporter):
    path = tmp_path / "e.csv"
    path.write_text("id,0,0\na,1,2\n")
    with pytest.raises(InputError, match=r"line 1, column 3: the name '0' appears twice"):
        inputs.read_embeddings(path, {"a"}, reporter)


def test_error_missing_embeddings_file(tmp_path, reporter):
    with pytest.raises(MissingFileError, match="does not exist"):
        inputs.read_embeddings(tmp_path / "missing.csv", {"a"}, reporter)


def test_error_unknown_task_type(tmp_path):
    path = write_labels(tmp_path, "biomass__regresion.csv", [("a", "1")])
    with pytest.raises(InputError, match=r"biomass__regresion\.csv: task type 'regresion' is unknown"):
        inputs.read_label_file(path)


def test_error_label_file_name_without_type(tmp_path):
    path = write_labels(tmp_path, "biomass.csv", [("a", "1")])
    with pytest.raises(InputError, match=r"biomass\.csv: the name must be <task>__<type>\.csv"):
        inputs.read_label_file(path)


def test_error_label_not_a_number(tmp_path):
    path = write_labels(tmp_path, "t__regression.csv", [("a", "1"), ("b", "high")])
    with pytest.raises(InputError, match=r"t__regression\.csv, line 3, column 'label': 'high' is not a number"):
        inputs.read_label_file(path)


def test_error_label_column_missing(tmp_path):
    path = tmp_path / "t__regression.csv"
    path.write_text("id,value\na,1\n")
    with pytest.raises(InputError, match=r"no 'label' column in the header \(columns: id, value\)"):
        inputs.read_label_file(path)


def test_error_same_task_twice(tmp_path, reporter):
    write_labels(tmp_path, "t__regression.csv", [("a", "1")])
    write_labels(tmp_path, "t__classification.csv", [("a", "1")])
    with pytest.raises(InputError, match="task 't' is named by both"):
        inputs.read_labels_folder(tmp_path, reporter)


def test_folder_given_as_file_rejected(tmp_path):
    with pytest.raises(InputError, match=r"embeddings CSV .* is a folder; give the path of the CSV file"):
        inputs.read_csv_header(tmp_path)
    with pytest.raises(InputError, match=r"exclude file .* is a folder"):
        inputs.read_exclude_file(tmp_path)


def test_task_without_matching_ids_shows_examples(tmp_path, caplog):
    reporter = LoggingReporter("test")
    csv_path = write_embeddings_csv(tmp_path / "e.csv", [f"s{index}" for index in range(30)], np.ones((30, 2)))
    matching = inputs.read_label_file(
        write_labels(tmp_path / "labels", "t__regression.csv", [(f"s{i}", "1") for i in range(30)])
    )
    other = inputs.read_label_file(write_labels(tmp_path / "labels", "u__regression.csv", [("x1", "1"), ("x2", "2")]))
    embeddings = inputs.read_embeddings(csv_path, set(matching.ids), reporter)
    inputs.assemble_tasks(embeddings, [matching, other], reporter, normalize_labels=False)
    assert "u: skipped, 0 labelled ids have an embedding and at least" in caplog.text
    assert "first ids of u__regression.csv: ['x1', 'x2']; first embedding ids: ['s0', 's1', 's2']" in caplog.text


def test_semicolon_label_file_hints_separator(tmp_path):
    path = tmp_path / "t__regression.csv"
    path.write_text("id;label\na;1\n")
    with pytest.raises(InputError, match=r"no 'id' column .* separated by semicolons or tabs; label files are read as comma"):
        inputs.read_label_file(path)


def test_task_filter_hints_comma(tmp_path):
    with pytest.raises(InputError, match=r"TASKS \(--tasks\): a;b not found in .*\. Separate task names with commas\."):
        inputs.check_task_filter(("a;b",), {"a", "b"}, tmp_path)


def test_labels_folder_missing_or_file(tmp_path, reporter):
    with pytest.raises(MissingFileError, match=r"labels folder .*nowhere does not exist\."):
        inputs.read_labels_folder(tmp_path / "nowhere", reporter)
    a_file = tmp_path / "labels.csv"
    a_file.write_text("id,label\n")
    with pytest.raises(InputError, match=r"labels folder .*labels\.csv is a file; give the folder"):
        inputs.read_labels_folder(a_file, reporter)


def test_error_labels_folder_without_csv(tmp_path, reporter):
    with pytest.raises(InputError, match="contains no .csv file"):
        inputs.read_labels_folder(tmp_path, reporter)


def test_error_no_overlapping_ids(tmp_path, reporter):
    csv_path = write_embeddings_csv(tmp_path / "e.csv", ["x1", "x2"], np.ones((2, 2)))
    label_file = inputs.read_label_file(write_labels(tmp_path / "labels", "t__regression.csv", [("a", "1")]))
    with pytest.raises(InputError, match=r"e\.csv: none of its 2 ids has a label \(first ids: \['x1', 'x2'\]\)"):
        inputs.read_embeddings(csv_path, set(label_file.ids), reporter)
    with pytest.raises(InputError, match=r"none of its 2 ids has a label and is not in the exclude file"):
        inputs.read_embeddings(csv_path, {"x1"}, reporter, exclude_ids={"x1"})


def test_error_classification_with_three_classes(tmp_path, reporter):
    rows = [(f"s{index}", str(index % 3)) for index in range(25)]
    with pytest.raises(InputError, match=r"t__classification\.csv: a classification task needs labels 0 and 1 "
                                         r"after min-max scaling, but it has 3 distinct values \(0, 1, 2\)\. "
                                         r"Use two classes, or rename the file to t__regression\.csv"):
        _assemble(tmp_path, reporter, rows, file_name="t__classification.csv")


def test_error_missing_exclude_file(tmp_path):
    with pytest.raises(MissingFileError, match="exclude file .* does not exist"):
        inputs.read_exclude_file(Path(tmp_path / "missing.txt"))


PLAIN_CELLS = [
    ["0", "-0.5", "+1.25", "1e-3"],
    ["-2.5E+02", "123456789012345", "0.000001234", "3.4028235e38"],
    ["1.17549435e-38", "7", "-0.0", "12.5e0"],
    ["0.1", "0.2", "0.30000000000000004", "-987654.321"],
]


def test_plain_csv_read_without_pandas(tmp_path, reporter, monkeypatch):
    """A plain numeric CSV goes through the compiled reader and gives correctly rounded float32 values."""
    path = tmp_path / "plain.csv"
    lines = ["id,0,1,2,3"] + [f"s{row}.zarr.zip," + ",".join(cells) for row, cells in enumerate(PLAIN_CELLS)]
    # Windows line ending on one row, a blank line, and no final line ending.
    path.write_bytes(("\n".join(lines[:2]) + "\r\n" + lines[2] + "\n\n" + "\n".join(lines[3:])).encode())
    real_import = inputs.import_optional

    def no_pandas(name, purpose):  # noqa: ANN001, ANN202
        assert name != "pandas", "the plain CSV was read with pandas"
        return real_import(name, purpose)

    monkeypatch.setattr(inputs, "import_optional", no_pandas)
    embeddings = inputs.read_embeddings(path, {"s0", "s1", "s2", "s3"}, reporter)
    expected = np.array([[np.float32(float(text)) for text in cells] for cells in PLAIN_CELLS], dtype=np.float32)
    assert embeddings.ids == ["s0", "s1", "s2", "s3"]
    np.testing.assert_array_equal(embeddings.values, expected)


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_plain_csv_parsed_in_parts(monkeypatch, parts):
    """Parts parsed on threads give the rows of a one-part parse, across blank lines and without a final line end."""
    from fusedeo.neuco import csv_kernel

    monkeypatch.setattr(csv_kernel, "MIN_PART_BYTES", 1)
    rows = [f"s{row}," + ",".join(cells) for row, cells in enumerate(PLAIN_CELLS * 3)]
    data = ("id,0,1,2,3\n" + "\n".join(rows[:4]) + "\n\n\n" + "\r\n".join(rows[4:9]) + "\n\n" + "\n".join(rows[9:])).encode()
    whole = csv_kernel.read_plain_csv(data, 4, threads=1)
    split = csv_kernel.read_plain_csv(data, 4, threads=parts)
    assert whole is not None
    assert split is not None
    assert whole[0] == [f"s{row}" for row in range(12)]
    assert split[0] == whole[0]
    np.testing.assert_array_equal(split[1], whole[1])
    assert csv_kernel.read_plain_csv(data.replace(b"s11,", b"s11,x"), 4, threads=parts) is None


@pytest.mark.parametrize("row", ['"s1",1.5,2', "s1,1.5,", "s1,1.5,nan", "s1,1.5,2,3", "s1,1.5"])
def test_csv_that_is_not_plain_read_with_pandas(tmp_path, reporter, row):
    path = tmp_path / "mixed.csv"
    path.write_text(f"id,0,1\ns0,0.25,-1\n{row}\n")
    embeddings = inputs.read_embeddings(path, {"s0", "s1"}, reporter)
    assert embeddings.ids == ["s0", "s1"]
    np.testing.assert_array_equal(embeddings.values[0], [0.25, -1.0])
    assert embeddings.values[1, 0] == 1.5
