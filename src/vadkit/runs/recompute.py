"""``vadkit eval`` and ``vadkit compare``: metrics from saved raw predictions alone (no model, no dataset).

``eval_run`` recomputes every metric of a run folder from its ``predictions.npz`` and refreshes the metric keys
of its ``metrics.json`` (the run facts, such as ``fit_seconds`` or ``params``, are kept), so a metric added to
vadkit later, or other evaluation settings, apply to old runs without re-running a model.

``compare_runs`` compares two runs on the same test set (same images in the same order, same labels) and,
because the pairing is what makes a comparison sensitive, uses paired statistics:
- image metrics: the difference B - A with a paired bootstrap interval (the same resampled images for both);
  for image AUROC also DeLong's test (DeLong, DeLong & Clarke-Pearson, Biometrics 1988);
- AUPIMO: the Wilcoxon signed-rank test on the per-image values (Bertoldo et al. recommend comparing
  models image by image), and a bootstrap interval of the mean per-image difference;
- pixel metrics: the difference, with each run's own interval (no paired test: pixels of one image are not
  independent, and a paired pixel bootstrap would need both runs' histograms on one binning).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.errors import DataError
from vadkit.runs.evaluation import evaluate_record, write_per_image_csv
from vadkit.runs.record import PredictionRecord, load_record
from vadkit.runs.train_test import METRICS_FILE, RUN_FACT_KEYS, write_json

__all__ = ["COMPARE_FILE", "Comparison", "compare_runs", "eval_run"]

COMPARE_FILE = "compare.json"
PAIRED_IMAGE_METRICS = ("image_auroc", "image_aupr", "image_f1_max")
COMPARED_METRICS = PAIRED_IMAGE_METRICS + ("pixel_auroc", "pixel_aupr", "pixel_f1_max", "pixel_aupro",
                                           "pixel_aupro_005", "aupimo_mean")


def eval_run(run_dir: str | Path, *, intervals: bool = True, n_resamples: int = 1000, seed: int = 0,
             fpr_bounds: tuple[float, float] = (1e-5, 1e-4)) -> dict[str, Any]:
    """Recompute the metrics of ``run_dir`` from ``predictions.npz``; rewrites metrics.json and per_image.csv."""
    run_dir = Path(run_dir)
    record = load_record(run_dir)
    evaluation = evaluate_record(record, intervals=intervals, n_resamples=n_resamples, seed=seed,
                                 fpr_bounds=fpr_bounds)
    previous = _read_metrics(run_dir)
    # Only the run facts are carried over: every metric key is recomputed, so a metric that is now undefined
    # (other settings) cannot linger from the previous evaluation.
    facts = {key: value for key, value in previous.items() if key in RUN_FACT_KEYS}
    metrics = {**evaluation.json_payload(), **facts}
    write_json(run_dir / METRICS_FILE, metrics)
    write_per_image_csv(run_dir, evaluation.per_image)
    return metrics


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error}); delete it and run `vadkit eval {run_dir}` "
                        "to write it again") from error


@dataclass
class Comparison:
    """Result of ``compare_runs``: one row per metric and the paired tests.

    ``rows``: metric -> {"a", "b", "difference", "ci_low", "ci_high", "interval"} where the interval is of
    the difference B - A ("paired bootstrap") or absent for pixel metrics (each run's own interval is given as
    ``a_interval`` / ``b_interval``). ``tests``: name -> the ``PairedTest`` fields.
    """

    run_a: str
    run_b: str
    n_images: int
    rows: dict[str, dict[str, Any]]
    tests: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_resamples: int = 1000, seed: int = 0,
                 out: str | Path | None = None) -> Comparison:
    """Compare run B against run A on the same test set; writes ``compare.json`` to ``out`` when given."""
    from vadkit.errors import UndefinedMetricError
    from vadkit.metrics import bootstrap_mean_ci, delong_test, paired_bootstrap, wilcoxon_per_image

    record_a, record_b = load_record(run_a), load_record(run_b)
    _require_same_test_set(record_a, record_b, run_a, run_b)
    eval_a = evaluate_record(record_a, n_resamples=n_resamples, seed=seed)
    eval_b = evaluate_record(record_b, n_resamples=n_resamples, seed=seed)
    labels = record_a.labels
    rows: dict[str, dict[str, Any]] = {}
    for name in COMPARED_METRICS:
        a, b = eval_a.metrics.get(name), eval_b.metrics.get(name)
        if a is None or b is None:
            continue
        row = {"a": a, "b": b, "difference": b - a, "a_interval": eval_a.intervals.get(name),
               "b_interval": eval_b.intervals.get(name)}
        if name in PAIRED_IMAGE_METRICS:
            paired = paired_bootstrap(labels, record_a.scores, record_b.scores, metric=name,
                                      n_resamples=n_resamples, seed=seed)
            row.update(ci_low=paired.ci_low, ci_high=paired.ci_high, p_value=paired.p_value,
                       interval="paired bootstrap")
        rows[name] = row
    tests: dict[str, dict[str, Any]] = {}
    try:
        tests["delong_image_auroc"] = asdict(delong_test(labels, record_a.scores, record_b.scores))
    except UndefinedMetricError:
        pass  # one class only: no AUROC, so nothing to test
    aupimo_a, aupimo_b = _aupimo(eval_a), _aupimo(eval_b)
    if aupimo_a is not None and aupimo_b is not None and np.isfinite(aupimo_a + aupimo_b).sum() > 0:
        tests["wilcoxon_aupimo"] = asdict(wilcoxon_per_image(aupimo_a, aupimo_b))
        mean_difference = bootstrap_mean_ci(aupimo_b - aupimo_a, n_resamples=n_resamples, seed=seed)
        rows.get("aupimo_mean", {}).update(ci_low=mean_difference.low, ci_high=mean_difference.high,
                                           interval="bootstrap of the per-image difference")
    comparison = Comparison(run_a=str(run_a), run_b=str(run_b), n_images=len(record_a), rows=rows,
                            tests=_plain(tests))
    if out is not None:
        write_json(Path(out) / COMPARE_FILE, comparison.as_dict())
    return comparison


def _aupimo(evaluation) -> np.ndarray | None:
    result = evaluation.report.aupimo
    return None if result is None else np.asarray(result.per_image, dtype=np.float64)


def _require_same_test_set(a: PredictionRecord, b: PredictionRecord, run_a, run_b) -> None:
    if len(a) != len(b) or a.paths != b.paths:
        raise DataError(
            f"{run_a} and {run_b} were tested on different images ({len(a)} vs {len(b)}, or another order): a "
            "paired comparison needs the same test set; run `vadkit test` of both models on the same data")
    if not np.array_equal(a.labels, b.labels):
        raise DataError(f"{run_a} and {run_b} have the same images with different labels: check the layout "
                        "options of the two test runs")


def _plain(value):
    """numpy scalars and arrays inside nested dicts -> Python numbers and lists, for JSON."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
