"""``vadkit eval`` and ``vadkit compare``: metrics from saved raw predictions alone (no model, no dataset).

``eval_run`` recomputes every metric of a run folder from its ``predictions.npz`` and refreshes the metric keys
of its ``metrics.json`` (the run facts, such as ``fit_seconds`` or ``params``, are kept), so a metric added to
vadkit later, or other evaluation settings, apply to old runs without re-running a model.

``compare_runs`` compares two runs on the same test set (same images in the same order, same labels) and,
because the pairing is what makes a comparison sensitive, uses paired statistics. Which metrics, and how each is
paired, is the metric registry's ``compare`` (``metrics.registry``); with vadkit's metrics:
- ``"paired_bootstrap"`` (image metrics): the difference B - A with a paired bootstrap interval (the same resampled
  images for both); with ``delong`` (image AUROC) also DeLong's test (DeLong, DeLong & Clarke-Pearson, Biometrics
  1988), under ``tests["delong_<key>"]``;
- ``"wilcoxon"`` (per-image metrics, AUPIMO): the Wilcoxon signed-rank test on the per-image values (Bertoldo et
  al. recommend comparing models image by image), under ``tests["wilcoxon_<key without _mean>"]`` (e.g.
  ``wilcoxon_aupimo``), and a bootstrap interval of the mean per-image difference;
- ``"unpaired"`` (pixel and region metrics): the difference, with each run's own interval (no paired test: pixels of
  one image are not independent, and a paired pixel bootstrap would need both runs' histograms on one binning).
Both runs are evaluated with the same settings (AUPIMO bounds and method), so their numbers are comparable.
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


def compared_metrics() -> tuple[str, ...]:
    """Keys ``compare_runs`` reports, in registry order: every registered metric with a ``compare`` rule."""
    from vadkit.metrics import registry

    return registry.keys(compare=("paired_bootstrap", "wilcoxon", "unpaired"))


def eval_run(run_dir: str | Path, *, intervals: bool = True, n_resamples: int = 1000, seed: int = 0,
             fpr_bounds: tuple[float, float] = (1e-5, 1e-4), aupimo_method: str | None = None) -> dict[str, Any]:
    """Recompute the metrics of ``run_dir`` from ``predictions.npz``; rewrites metrics.json and per_image.csv.

    ``fpr_bounds`` and ``aupimo_method`` (None: ``"reference"``) are the AUPIMO settings (``metrics.pimo``).
    """
    run_dir = Path(run_dir)
    record = load_record(run_dir)
    evaluation = evaluate_record(record, intervals=intervals, n_resamples=n_resamples, seed=seed,
                                 fpr_bounds=fpr_bounds, aupimo_method=aupimo_method)
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
    the difference B - A ("paired bootstrap", or "bootstrap of the per-image difference") or absent for unpaired
    metrics (each run's own interval is given as ``a_interval`` / ``b_interval``). ``tests``: name -> the
    ``PairedTest`` fields.
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
    from vadkit.metrics import bootstrap_mean_ci, delong_test, paired_bootstrap, registry, wilcoxon_per_image

    record_a, record_b = load_record(run_a), load_record(run_b)
    _require_same_test_set(record_a, record_b, run_a, run_b)
    eval_a = evaluate_record(record_a, n_resamples=n_resamples, seed=seed)
    eval_b = evaluate_record(record_b, n_resamples=n_resamples, seed=seed)
    labels = record_a.labels
    rows: dict[str, dict[str, Any]] = {}
    tests: dict[str, dict[str, Any]] = {}
    for name in compared_metrics():
        metric = registry.get(name)
        a, b = eval_a.metrics.get(name), eval_b.metrics.get(name)
        if a is None or b is None:
            continue
        row = {"a": a, "b": b, "difference": b - a, "a_interval": eval_a.intervals.get(name),
               "b_interval": eval_b.intervals.get(name)}
        if metric.compare == "paired_bootstrap":
            paired = paired_bootstrap(labels, record_a.scores, record_b.scores, metric=name,
                                      n_resamples=n_resamples, seed=seed)
            row.update(ci_low=paired.ci_low, ci_high=paired.ci_high, p_value=paired.p_value,
                       interval="paired bootstrap")
        if metric.delong:
            try:
                tests[f"delong_{name}"] = asdict(delong_test(labels, record_a.scores, record_b.scores))
            except UndefinedMetricError:
                pass  # fewer than 2 images of a class: DeLong's variance does not exist
        if metric.compare == "wilcoxon":
            values_a, values_b = eval_a.report.per_image.get(name), eval_b.report.per_image.get(name)
            if values_a is not None and values_b is not None and np.isfinite(values_a + values_b).any():
                tests[f"wilcoxon_{name.removesuffix('_mean')}"] = asdict(wilcoxon_per_image(values_a, values_b))
                mean_difference = bootstrap_mean_ci(values_b - values_a, n_resamples=n_resamples, seed=seed)
                row.update(ci_low=mean_difference.low, ci_high=mean_difference.high,
                           interval="bootstrap of the per-image difference")
        rows[name] = row
    comparison = Comparison(run_a=str(run_a), run_b=str(run_b), n_images=len(record_a), rows=rows,
                            tests=_plain(tests))
    if out is not None:
        write_json(Path(out) / COMPARE_FILE, comparison.as_dict())
    return comparison


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
