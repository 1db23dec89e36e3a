"""Run folders: the app layer behind the CLI (train, test, predict, eval, compare, report).

- ``train_test.py``: ``train``, ``test``, ``predict``: models in, run folders out;
- ``record.py``: ``predictions.npz``, the raw predictions a test run saves (``PredictionRecord``);
- ``evaluation.py``: every metric of a record (``evaluate_record``), per defect, per image, with intervals;
- ``recompute.py``: ``eval_run`` and ``compare_runs``, from saved records alone (no model, no dataset);
- ``reporting.py``: ``report_run``, the self-contained ``report.html`` of a run folder.
"""

from vadkit.runs.evaluation import PER_IMAGE_FILE, RecordEvaluation, evaluate_record
from vadkit.runs.record import PREDICTIONS_NPZ, PredictionRecord, load_record
from vadkit.runs.train_test import (
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    Evaluation,
    build_datasets,
    evaluate,
    expand_inputs,
    predict,
    test,
    train,
    write_json,
    write_overlays,
)

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "PER_IMAGE_FILE",
    "PREDICTIONS_FILE",
    "PREDICTIONS_NPZ",
    "Evaluation",
    "PredictionRecord",
    "RecordEvaluation",
    "build_datasets",
    "evaluate",
    "evaluate_record",
    "expand_inputs",
    "load_record",
    "predict",
    "test",
    "train",
    "write_json",
    "write_overlays",
]
