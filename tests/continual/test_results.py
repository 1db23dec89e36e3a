"""R-matrix bookkeeping against figures computed by hand on a fixed matrix."""

import json
import math

import numpy as np
import pytest

from vadkit.continual.results import ContinualResults, average_seen, backward_transfer, forgetting

NAN = math.nan
# R[t, j]: after task t, on task j (3 tasks)
R = np.array([[0.90, NAN, NAN],
              [0.70, 0.80, NAN],
              [0.60, 0.85, 0.95]])


def test_average_forgetting_and_bwt_by_hand():
    assert average_seen(R) == pytest.approx([0.90, 0.75, (0.60 + 0.85 + 0.95) / 3])
    # task 0: best of R[0,0], R[1,0] = 0.90, minus R[2,0] = 0.60; task 1: best of R[1,1] = 0.80, minus 0.85
    assert forgetting(R) == pytest.approx([0.30, -0.05])
    # ((0.60 - 0.90) + (0.85 - 0.80)) / 2
    assert backward_transfer(R) == pytest.approx(-0.125)


def test_forgetting_takes_the_best_earlier_value_not_the_diagonal():
    # task 0 improved after task 1 (0.95 > 0.90) before dropping: forgetting counts from the best, BWT from R[j, j]
    matrix = np.array([[0.90, NAN, NAN], [0.95, 0.80, NAN], [0.70, 0.80, 0.90]])
    assert forgetting(matrix) == pytest.approx([0.25, 0.0])
    assert backward_transfer(matrix) == pytest.approx(-0.10)


def test_one_task_and_undefined_entries():
    assert len(forgetting([[0.9]])) == 0 and math.isnan(backward_transfer([[0.9]]))
    matrix = np.array([[NAN, NAN], [0.5, 0.7]])  # the metric was undefined on task 0 after task 0
    assert math.isnan(forgetting(matrix)[0])  # t ranges over [0, T-2] = [0]: nothing measured to forget from
    assert math.isnan(backward_transfer(matrix))
    matrix = np.array([[NAN, NAN, NAN], [0.6, 0.8, NAN], [0.5, 0.7, 0.9]])
    assert forgetting(matrix) == pytest.approx([0.1, 0.1])  # NaN entries are skipped, measured ones count
    assert backward_transfer(matrix) == pytest.approx(-0.1)  # only task 1 has both R[j, j] and R[T-1, j]
    with pytest.raises(ValueError, match="square"):
        average_seen(np.zeros((2, 3)))


def test_results_json_writes_nan_as_null_and_the_summaries(tmp_path):
    results = ContinualResults(tasks=["a", "b", "c"], metrics=["image_auroc"], R={"image_auroc": R},
                               memory_bytes=[10, 20, 30], train_seconds=[1.0, 2.0, 3.0],
                               task_id_accuracy={"prototype": np.array([[1.0, NAN, NAN], [1.0, 0.5, NAN],
                                                                        [1.0, 0.5, 1.0]])},
                               info={"strategy": "replay", "method": "stfpm"})
    payload = json.loads(results.write_json(tmp_path / "results.json").read_text())
    assert payload["R"]["image_auroc"][0] == [0.9, None, None]
    assert payload["forgetting"]["image_auroc"]["per_task"] == pytest.approx([0.30, -0.05])
    assert payload["forgetting"]["image_auroc"]["mean"] == pytest.approx(0.125)
    assert payload["bwt"]["image_auroc"] == pytest.approx(-0.125)
    assert payload["average"]["image_auroc"][-1] == pytest.approx(0.8)
    assert payload["task_id_accuracy"]["prototype"]["average"] == pytest.approx([1.0, 0.75, 2.5 / 3])
    assert payload["memory_bytes"] == [10, 20, 30] and payload["strategy"] == "replay"
    text = results.markdown()
    assert "| b | 0.700 | 0.800 | - | 0.750 |" in text and "BWT -0.125" in text
