"""Q statistic, rank aggregation, and the run and leaderboard files."""

import csv
import json
import math
from datetime import datetime

import numpy as np
import pytest

from fusedeo.errors import InputError
from fusedeo.neuco import results, scores
from fusedeo.reporting import LoggingReporter


@pytest.mark.parametrize(
    ("mean", "std", "expected"),
    [(1.0, 0.0, 100.0), (0.5, 0.03, 20.0), (-0.2, 0.08, -4.0), (0.0, 0.1, 0.0)],
)
def test_q_score(mean, std, expected):
    assert scores.q_score(mean, std) == pytest.approx(expected)


def test_task_score_uses_population_std_and_ignores_nan():
    score = scores.TaskScore("t", "regression", np.array([0.5, 0.7, np.nan, 0.6]))
    assert score.mean == pytest.approx(0.6)
    assert score.std == pytest.approx(np.sqrt(((0.1**2) * 2) / 3))
    assert score.q == pytest.approx(2 * 0.6 / (0.02 + score.std))


def test_task_score_all_nan():
    score = scores.TaskScore("t", "regression", np.array([np.nan, np.nan]))
    assert math.isnan(score.mean)
    assert math.isnan(score.q)


def test_min_ranks_ties_share_lowest_rank():
    np.testing.assert_array_equal(scores.min_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3, 1, 3, 2])
    np.testing.assert_array_equal(scores.min_ranks(np.array([1.0, 1.0, 5.0])), [1, 1, 3])


def test_rank_runs_hand_computed_example():
    # Q per task:  t1   t2
    #   A         10    5
    #   B          8    9
    #   C          8    1
    # Ranks t1 (ties share the lower rank): A 1, B 2, C 2.  Ranks t2: B 1, A 2, C 3.
    # Std of Q across runs (ddof 1): t1 = sqrt(4/3) = 1.1547, t2 = 4.
    # Weights: t1 = 1.1547 / 5.1547 = 0.224009, t2 = 0.775991.
    # Weighted score: A = 1(0.224009) + 2(0.775991) = 1.775991
    #                 B = 2(0.224009) + 1(0.775991) = 1.224009
    #                 C = 2(0.224009) + 3(0.775991) = 2.775991
    runs = [
        scores.RunScores("A", {"t1": 10.0, "t2": 5.0}),
        scores.RunScores("B", {"t1": 8.0, "t2": 9.0}),
        scores.RunScores("C", {"t1": 8.0, "t2": 1.0}),
    ]
    leaderboard = scores.rank_runs(runs)
    assert leaderboard.weights == pytest.approx({"t1": 0.224009, "t2": 0.775991}, abs=1e-6)
    assert [row.experiment for row in leaderboard.rows] == ["B", "A", "C"]
    assert [row.aggregated_rank for row in leaderboard.rows] == [1, 2, 3]
    assert [row.weighted_score for row in leaderboard.rows] == pytest.approx([1.224009, 1.775991, 2.775991], abs=1e-6)
    assert [row.mean_q for row in leaderboard.rows] == pytest.approx([8.5, 7.5, 4.5])
    assert leaderboard.rows[2].task_ranks == {"t1": 2, "t2": 3}


def test_rank_runs_drops_incomplete_runs():
    runs = [
        scores.RunScores("full", {"t1": 1.0, "t2": 2.0}),
        scores.RunScores("partial", {"t1": 5.0}),
        scores.RunScores("nan", {"t1": 5.0, "t2": math.nan}),
    ]
    leaderboard = scores.rank_runs(runs)
    assert [row.experiment for row in leaderboard.rows] == ["full"]
    assert leaderboard.incomplete == ["partial", "nan"]


def test_rank_runs_single_run_has_equal_weights():
    leaderboard = scores.rank_runs([scores.RunScores("only", {"a": 1.0, "b": 2.0, "c": 3.0})])
    assert leaderboard.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert leaderboard.rows[0].aggregated_rank == 1
    assert leaderboard.rows[0].weighted_score == pytest.approx(1.0)


def test_rank_runs_identical_runs_tie():
    leaderboard = scores.rank_runs([scores.RunScores("x", {"a": 1.0}), scores.RunScores("y", {"a": 1.0})])
    assert [row.aggregated_rank for row in leaderboard.rows] == [1, 1]


def test_run_files_and_leaderboard_csv(tmp_path):
    reporter = LoggingReporter("test")
    run_folder = results.new_run_folder(tmp_path, "dev", "method")
    task = scores.TaskScore("biomass", "regression", np.array([0.5, 0.6]))
    task_path = results.write_task_result(run_folder, task, {"probe": "ridge"})
    content = json.loads(task_path.read_text())
    assert task_path == run_folder / "biomass" / "biomass_result.json"
    assert content["q_stat"] == pytest.approx(task.q)
    assert content["mean_score"] == pytest.approx(0.55)
    assert content["std_dev"] == pytest.approx(0.05)
    assert content["q_t"] == [0.5, 0.6]
    summary = json.loads(
        results.write_run_summary(run_folder, "method_x", [task], {"k_folds": 2, "probe_type": "ridge"}, {}).read_text()
    )
    assert summary["overall_q_score"] == pytest.approx(task.q)
    assert summary["task_acc_scores"] == {"biomass": pytest.approx(0.55)}

    # A run in NeuCo-Bench's older summary format is read as well.
    old = tmp_path / "dev" / "old_run"
    old.mkdir()
    (old / results.SUMMARY_FILE).write_text(json.dumps({"experiment": "old", "task_result": {"biomass": 2.0}}))
    runs = results.read_phase_runs(tmp_path, "dev", reporter)
    assert sorted(run.experiment for run in runs) == ["method_x", "old"]

    leaderboard_path = results.write_leaderboard_csv(tmp_path / "lb.csv", scores.rank_runs(runs), runs)
    with leaderboard_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "experiment", "mean_score", "weighted_score", "aggregated_rank",
        "q::biomass", "acc::biomass", "overall_q_score", "overall_acc_score", "probe",
    ]
    assert [row["experiment"] for row in rows] == ["method_x", "old"]
    assert [row["probe"] for row in rows] == ["ridge", ""]


def test_new_run_folder_never_reuses_a_folder(tmp_path):
    now = datetime(2025, 6, 1, 12, 30, 5)
    first = results.new_run_folder(tmp_path, "dev", "m", now=now)
    second = results.new_run_folder(tmp_path, "dev", "m", now=now)
    assert first.name == "m_20250601_123005"
    assert second.name == "m_20250601_123005_2"


@pytest.mark.parametrize("name", ["", "..", "a/b", "leaderboards"])
def test_phase_name_rejected(name):
    with pytest.raises(InputError, match="PHASE"):
        results.check_folder_name(name, "PHASE", reserved=(results.LEADERBOARD_FOLDER,))


def test_task_normalised_scores_per_column():
    from fusedeo.neuco.report import task_normalised_scores

    q_table = np.array([[10.0, 3.0, 1.0], [20.0, 3.0, np.nan], [15.0, 3.0, 5.0]])
    normalised = task_normalised_scores(q_table)
    np.testing.assert_allclose(normalised[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(normalised[:, 1], [0.5, 0.5, 0.5])
    assert normalised[0, 2] == 0.0
    assert np.isnan(normalised[1, 2])
    assert normalised[2, 2] == 1.0


def test_heatmap_colours_red_to_green():
    from fusedeo.neuco.report import MISSING_COLOUR, colour_of

    assert colour_of(0.0) == "#d7191c"
    assert colour_of(0.5) == "#ffffbf"
    assert colour_of(1.0) == "#1a9641"
    # Halfway between the first two anchors, red and orange.
    assert colour_of(0.125) == "#ea643e"
    assert colour_of(float("nan")) == MISSING_COLOUR


def test_report_cells_coloured_by_task_rank(tmp_path):
    from fusedeo.neuco.report import write_report
    from fusedeo.neuco.scores import RunScores, rank_runs

    runs = [
        RunScores("low", {"a": 1.0, "b": 4.0}, {"a": 0.1, "b": 0.4}, "neuco"),
        RunScores("high", {"a": 9.0, "b": 2.0}, {"a": 0.9, "b": 0.2}, "neuco"),
        RunScores("partial", {"a": 5.0}, {"a": 0.5}, "neuco"),
    ]
    text = write_report(tmp_path / "report.html", "dev", runs, rank_runs(runs)).read_text()
    assert "<th>low</th>" in text
    assert '<td style="background:#d7191c;color:#fff">1.0</td>' in text
    assert '<td style="background:#1a9641;color:#fff">9.0</td>' in text
    assert '<td style="background:#ffffbf;color:#000">5.0</td>' in text
    assert '<td style="background:#bdbdbd;color:#000">–</td>' in text
    assert text.count("<rect ") == 3
    assert "5.00 (1 of 2 tasks)" in text
    assert "data:image" not in text
