"""End to end: the core evaluate(), the command line and fusedeo:evaluate through Processing."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from neuco_data import write_benchmark

from fusedeo.errors import InputError, OutputError, RunCancelledError
from fusedeo.neuco import EvaluationConfig, evaluate
from fusedeo.neuco.__main__ import main
from fusedeo.neuco.linear_probe import LinearProbeSettings
from fusedeo.reporting import LoggingReporter

TASKS = ["alpha", "beta", "gamma"]
# The package exports the function evaluate(), which hides the module of the same name.
EVALUATE_MODULE = sys.modules["fusedeo.neuco.evaluate"]


@pytest.fixture()
def benchmark_files(tmp_path):
    return write_benchmark(tmp_path / "data")


def _task_json(run_folder, task):
    return json.loads((run_folder / task / f"{task}_result.json").read_text())


def test_evaluate_ridge_writes_runs_leaderboard_and_report(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", probe="ridge", k_folds=6, phase="dev")
    result = evaluate(config, LoggingReporter("test"))

    assert [score.task_name for score in result.task_scores] == TASKS
    assert result.run_folder.parent == tmp_path / "out" / "dev"
    for task in TASKS:
        content = _task_json(result.run_folder, task)
        assert len(content["q_t"]) == 6
        assert content["mean_score"] == pytest.approx(np.mean(content["q_t"]))
        assert content["std_dev"] == pytest.approx(np.std(content["q_t"]))
        assert content["q_stat"] == pytest.approx(2 * content["mean_score"] / (0.02 + content["std_dev"]))
    assert _task_json(result.run_folder, "alpha")["n_samples"] == 200
    assert _task_json(result.run_folder, "gamma")["task_type"] == "classification"
    # The labels are near-linear in the embeddings, so ridge scores well.
    assert _task_json(result.run_folder, "alpha")["mean_score"] > 0.9
    assert _task_json(result.run_folder, "gamma")["mean_score"] > 0.8

    summary = json.loads(result.summary_path.read_text())
    assert summary["overall_q_score"] == pytest.approx(result.overall_q)
    assert set(summary["task_q_scores"]) == set(TASKS)
    assert summary["config"]["probe_type"] == "ridge"
    assert summary["task_samples"] == {"alpha": 200, "beta": 180, "gamma": 200}

    with result.leaderboard_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["experiment"] for row in rows] == [result.run_folder.name]
    report = result.report_path.read_text()
    assert result.report_path == tmp_path / "out" / "leaderboards" / "dev" / "report.html"
    assert all(task in report for task in TASKS)
    # One run: every task's Q is both its lowest and its highest, so every cell is the middle colour.
    assert report.count('<td style="background:#ffffbf;color:#000">') == len(TASKS)
    assert report.count("<rect ") == 1


def test_evaluate_neuco_is_deterministic(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    fold_scores = []
    for attempt, workers in enumerate((2, 2, 1)):
        config = EvaluationConfig(
            csv_path, labels, tmp_path / f"out{attempt}", k_folds=3, tasks=("alpha", "gamma"), workers=workers
        )
        result = evaluate(config, LoggingReporter("test"))
        fold_scores.append([score.fold_scores for score in result.task_scores])
    # The same settings give the same numbers; another thread count changes only the rounding.
    for first, second, single_thread in zip(*fold_scores, strict=True):
        np.testing.assert_array_equal(first, second)
        np.testing.assert_allclose(first, single_thread, rtol=1e-6)


def test_small_task_warns_probe_barely_trained(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    reporter = LoggingReporter("test")
    evaluate(EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=3, tasks=("alpha",)), reporter)
    warnings = [text for level, text in reporter.messages if level == "warning"]
    assert any(text.startswith("alpha: 180 training rows per split give the probe only 30 AdamW steps")
               for text in warnings)


def test_undertrained_probe_warning(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    reporter = LoggingReporter("test")
    evaluate(EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=4), reporter)
    warnings = [text for level, text in reporter.messages if level == "warning"]
    assert any(
        "still rising at the last of 10 epochs in most splits of alpha (4 of 4), beta (4 of 4)." in text
        for text in warnings
    )

    reporter = LoggingReporter("test")
    trained = LinearProbeSettings(epochs=60, learning_rate=0.01)
    evaluate(EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=4, linear=trained), reporter)
    assert not any("still rising" in text for level, text in reporter.messages)


def test_forked_reader_gives_same_scores(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    scores = []
    for fork_reader in (False, True):
        config = EvaluationConfig(csv_path, labels, tmp_path / f"out{fork_reader}", k_folds=3, tasks=("alpha",),
                                  fork_reader=fork_reader)
        scores.append([score.fold_scores for score in evaluate(config, LoggingReporter("test")).task_scores])
    for in_process, forked in zip(*scores, strict=True):
        np.testing.assert_array_equal(in_process, forked)


def test_forked_reader_raises_child_error(tmp_path, benchmark_files):
    _, labels = benchmark_files
    bad = tmp_path / "bad.csv"
    bad.write_text("name,0\na,1\n")
    config = EvaluationConfig(bad, labels, tmp_path / "out", fork_reader=True)
    with pytest.raises(InputError, match=r"bad.csv.*no 'id' column"):
        evaluate(config, LoggingReporter("test"))
    assert not (tmp_path / "out").exists()


def test_evaluate_second_run_is_ranked_in_the_phase(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    for name in ("first", "second"):
        config = EvaluationConfig(csv_path, labels, tmp_path / "out", probe="ridge", k_folds=3, method_name=name)
        result = evaluate(config, LoggingReporter("test"))
    with result.leaderboard_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    # Identical embeddings give identical Q, so both runs share rank 1.
    assert {row["aggregated_rank"] for row in rows} == {"1"}
    assert "mixes probes" not in result.report_path.read_text()

    config = EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=3, method_name="third")
    result = evaluate(config, LoggingReporter("test"))
    assert "This phase mixes probes (neuco, ridge)" in result.report_path.read_text()


def test_evaluate_unknown_task_in_filter(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", tasks=("alpha", "delta"))
    with pytest.raises(InputError, match=r"TASKS \(--tasks\): delta not found in .*; the tasks there are alpha, beta, gamma"):
        evaluate(config, LoggingReporter("test"))


def test_file_as_output_folder_rejected(tmp_path, benchmark_files, monkeypatch):
    csv_path, labels = benchmark_files
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setattr(EVALUATE_MODULE, "load_tasks", _fail_if_called)
    for output_folder in (blocker, blocker / "results"):
        config = EvaluationConfig(csv_path, labels, output_folder, probe="ridge")
        with pytest.raises(InputError, match=r"OUTPUT_FOLDER \(--output-folder\): .*afile"):
            evaluate(config, LoggingReporter("test"))
    assert blocker.read_text() == "not a folder"


def test_folder_as_report_path_rejected(tmp_path, benchmark_files, monkeypatch):
    csv_path, labels = benchmark_files
    monkeypatch.setattr(EVALUATE_MODULE, "load_tasks", _fail_if_called)
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", probe="ridge", report_path=tmp_path)
    with pytest.raises(InputError, match=r"OUTPUT_REPORT \(--output-report\): .* is a folder"):
        evaluate(config, LoggingReporter("test"))
    assert not (tmp_path / "out").exists()


def test_failed_report_write_keeps_previous_phase(tmp_path, benchmark_files, monkeypatch):
    csv_path, labels = benchmark_files
    first = evaluate(
        EvaluationConfig(csv_path, labels, tmp_path / "out", probe="ridge", k_folds=3, method_name="first"),
        LoggingReporter("test"),
    )
    leaderboard_before = first.leaderboard_path.read_text()
    report_before = first.report_path.read_text()

    def full_disk(path, *arguments):  # noqa: ANN001, ANN202
        path.write_text("<html>half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EVALUATE_MODULE, "write_report", full_disk)
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", probe="ridge", k_folds=3, method_name="second")
    with pytest.raises(OutputError, match="No space left on device"):
        evaluate(config, LoggingReporter("test"))
    assert [run.name for run in (tmp_path / "out" / "results").iterdir()] == [first.run_folder.name]
    assert first.leaderboard_path.read_text() == leaderboard_before
    assert first.report_path.read_text() == report_before
    assert sorted(path.name for path in first.report_path.parent.iterdir()) == ["leaderboard.csv", "report.html"]


def _fail_if_called(*arguments):  # noqa: ANN002, ANN202
    raise AssertionError("the inputs were read although the output paths are invalid")


class _CancelledAfterReading(LoggingReporter):
    def is_canceled(self) -> bool:
        return any("Standardised all values" in text for _, text in self.messages)


def test_cancel_while_reading_skips_probing(tmp_path, benchmark_files, monkeypatch):
    csv_path, labels = benchmark_files
    monkeypatch.setattr(EVALUATE_MODULE, "probe_tasks", _fail_if_called)
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=3)
    with pytest.raises(RunCancelledError, match="while reading the inputs"):
        evaluate(config, _CancelledAfterReading("test"))
    assert not (tmp_path / "out").exists()


class _AlwaysCancelled(LoggingReporter):
    def is_canceled(self) -> bool:
        return True


def test_evaluate_cancelled_writes_nothing(tmp_path, benchmark_files):
    csv_path, labels = benchmark_files
    config = EvaluationConfig(csv_path, labels, tmp_path / "out", k_folds=3)
    with pytest.raises(RunCancelledError):
        evaluate(config, _AlwaysCancelled("test"))
    assert not (tmp_path / "out").exists()


def test_command_line_prints_scores(tmp_path, benchmark_files, capsys):
    csv_path, labels = benchmark_files
    status = main(
        [
            "--embeddings-csv", str(csv_path), "--labels-folder", str(labels), "--output-folder", str(tmp_path / "out"),
            "--probe", "ridge", "--k-folds", "4", "--phase", "cli", "--method-name", "m", "--tasks", "alpha,beta",
            "--quiet",
        ]
    )
    output = capsys.readouterr().out
    assert status == 0
    assert "alpha" in output
    assert "beta" in output
    assert "gamma" not in output
    assert "mean Q:" in output
    assert (tmp_path / "out" / "leaderboards" / "cli" / "leaderboard.csv").is_file()


def test_command_line_bad_file_exits_with_message(tmp_path, benchmark_files, capsys):
    _, labels = benchmark_files
    bad = tmp_path / "bad.csv"
    bad.write_text("name,0\na,1\n")
    status = main(["--embeddings-csv", str(bad), "--labels-folder", str(labels), "--output-folder", str(tmp_path)])
    assert status == 2
    assert "no 'id' column" in capsys.readouterr().err


def test_core_imports_without_qgis_torch_or_matplotlib():
    code = (
        "import sys\n"
        "import fusedeo.neuco, fusedeo.neuco.__main__\n"
        "bad = [name for name in sys.modules if name.startswith(('qgis', 'torch', 'matplotlib', 'pandas'))]\n"
        "print(','.join(bad))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert output == ""


def test_processing_evaluate_end_to_end(processing, tmp_path, benchmark_files):
    from qgis.core import QgsApplication, QgsProcessingContext

    csv_path, labels = benchmark_files
    algorithm = QgsApplication.processingRegistry().algorithmById("fusedeo:evaluate")
    assert algorithm is not None

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("name,0\na,1\n")
    ok, message = algorithm.checkParameterValues(
        {"EMBEDDINGS_CSV": str(bad_csv), "LABELS_FOLDER": str(labels), "OUTPUT_FOLDER": str(tmp_path / "x")},
        QgsProcessingContext(),
    )
    assert not ok
    assert "no 'id' column" in message

    outputs = processing.run(
        "fusedeo:evaluate",
        {"EMBEDDINGS_CSV": str(csv_path), "LABELS_FOLDER": str(labels), "K_FOLDS": 3, "OUTPUT_FOLDER": str(tmp_path / "default")},
    )
    assert outputs["OUTPUT_REPORT"] == str(tmp_path / "default" / "leaderboards" / "results" / "report.html")

    report = tmp_path / "report.html"
    outputs = processing.run(
        "fusedeo:evaluate",
        {
            "EMBEDDINGS_CSV": str(csv_path),
            "LABELS_FOLDER": str(labels),
            "PROBE": "ridge",
            "K_FOLDS": 5,
            "PHASE": "qgis",
            "METHOD_NAME": "ridge_run",
            "OUTPUT_FOLDER": str(tmp_path / "out"),
            "OUTPUT_REPORT": str(report),
        },
    )
    run_folder = tmp_path / "out" / "qgis" / outputs["RUN_FOLDER"].split("/")[-1]
    assert run_folder.is_dir()
    assert run_folder.name.startswith("ridge_run_")
    summary = json.loads((run_folder / "results_summary.json").read_text())
    assert outputs["MEAN_Q"] == pytest.approx(summary["overall_q_score"])
    for task in TASKS:
        content = _task_json(run_folder, task)
        assert len(content["q_t"]) == 5
        assert content["q_stat"] == pytest.approx(summary["task_q_scores"][task])
    assert summary["task_q_scores"]["alpha"] > 10
    assert outputs["OUTPUT_REPORT"] == str(report)
    text = report.read_text()
    assert all(task in text for task in TASKS)
    assert "ridge_run_" in text
    assert outputs["LEADERBOARD"].endswith("leaderboards/qgis/leaderboard.csv")
