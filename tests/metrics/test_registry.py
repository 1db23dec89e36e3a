"""The metric registry is the single source: every reported key is registered, every consumer's list is what the
registry derives, and a metric registered here appears in compute_metrics, the bootstraps, compare, the CLI and the
report labels without touching them."""

import numpy as np
import pytest

from vadkit.metrics import (
    IMAGE_METRICS,
    PIXEL_METRICS,
    Metric,
    aupro,
    auroc,
    bootstrap_image_ci,
    bootstrap_pixel_ci,
    compute_metrics,
    paired_bootstrap,
    registry,
)
from vadkit.metrics.bootstrap import IMAGE_CI_METRICS, PIXEL_CI_METRICS

# A new AU-PRO limit and a second image AUROC key: everything a consumer needs is in these two lines.
AUPRO_01 = Metric("pixel_aupro_01", "Pixel AU-PRO (FPR ≤ 0.1)", "region", True, "masks", "aupro", fpr_limit=0.1,
                  bootstrap="pixel_histogram", compare="unpaired", summary=True, per_defect_column=True)
IMAGE_AUROC_COPY = Metric("image_auroc_copy", "Image AUROC (copy)", "image", True, "labels", "auroc",
                          bootstrap="images", compare="paired_bootstrap", summary=True)


@pytest.fixture
def evaluation():
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 24, 24), dtype=bool)
    masks[4, 2:8, 2:8] = masks[5, 10:14, 1:5] = masks[6, 0, 0] = masks[7, 12:20, 12:16] = True
    maps = (rng.random(masks.shape) + masks * 0.7).astype(np.float32)
    return masks.any(axis=(1, 2)), maps.max(axis=(1, 2)), masks, maps


def test_every_key_compute_metrics_produces_is_registered(evaluation):
    from tests.metrics.test_metrics_report import loco_case

    labels, scores, masks, maps = evaluation
    report = compute_metrics(labels, scores, masks, maps, fpr_bounds=(1e-2, 1e-1))  # AUPIMO defined here
    _, _, loco_maps, loco_regions = loco_case()
    loco = compute_metrics(np.array([0, 0, 1, 1, 1]), loco_maps.max(axis=(1, 2)), maps=loco_maps,
                           loco_regions=loco_regions)
    produced = set(report.values) | set(report.skipped) | set(loco.values)
    assert "aupimo_mean" in report.values and "pixel_auspro" in loco.values  # everything was computed
    assert produced <= set(registry.keys())
    # ... and conversely: compute_metrics computes every registered metric it has the input for.
    assert produced == set(registry.keys(needs=("labels", "masks", "loco_regions")))


def test_consumer_lists_are_the_registrys():
    from vadkit.cli import SUMMARY_FACT_KEYS, summary_keys
    from vadkit.report.formatting import metric_label
    from vadkit.runs.recompute import compared_metrics

    assert IMAGE_METRICS == registry.keys(needs="labels") == ("image_auroc", "image_aupr", "image_f1_max")
    assert PIXEL_METRICS == registry.keys(needs="masks", companion_of=None)
    assert IMAGE_CI_METRICS == registry.keys(bootstrap="images")
    assert PIXEL_CI_METRICS == registry.keys(bootstrap="pixel_histogram")
    assert compared_metrics() == registry.keys(compare=("paired_bootstrap", "wilcoxon", "unpaired"))
    assert summary_keys() == registry.keys(summary=True) + SUMMARY_FACT_KEYS
    assert all(metric_label(m.key) == m.label for m in registry.metrics())
    # What the CLI showed before the registry, in the same order, plus sPRO (shown when computed).
    assert summary_keys() == ("image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_aupr",
                              "pixel_f1_max", "pixel_aupro", "pixel_aupro_005", "aupimo_mean", "pixel_auspro",
                              "image_precision", "image_recall", "image_fpr", "n_train", "n_test", "fit_seconds",
                              "predict_ms_per_image", "threshold")
    assert registry.keys(per_defect_column=True) == ("image_auroc", "pixel_auroc", "pixel_aupro", "aupimo_mean")


def test_a_metric_registered_later_reaches_every_consumer(evaluation):
    from vadkit.cli import summary_keys
    from vadkit.report.formatting import metric_label
    from vadkit.runs.recompute import compared_metrics

    labels, scores, masks, maps = evaluation
    with registry.registered(AUPRO_01), registry.registered(IMAGE_AUROC_COPY):
        report = compute_metrics(labels, scores, masks, maps)
        assert report.values["pixel_aupro_01"] == aupro(masks, maps, fpr_limit=0.1)
        assert report.values["image_auroc_copy"] == auroc(labels, scores) == report.values["image_auroc"]
        pixel = bootstrap_pixel_ci(masks, maps, n_resamples=50)
        assert pixel["pixel_aupro_01"].estimate == pytest.approx(aupro(masks, maps, 0.1), abs=1e-3)
        assert pixel["pixel_aupro_01"].low <= pixel["pixel_aupro_01"].high
        assert bootstrap_image_ci(labels, scores, n_resamples=50)["image_auroc_copy"].estimate == auroc(labels,
                                                                                                         scores)
        same = paired_bootstrap(labels, scores, scores, metric="image_auroc_copy", n_resamples=50)
        assert same.difference == 0.0
        assert {"pixel_aupro_01", "image_auroc_copy"} <= set(compared_metrics())
        assert {"pixel_aupro_01", "image_auroc_copy"} <= set(summary_keys())
        assert "pixel_aupro_01" in registry.keys(per_defect_column=True)
        assert metric_label("pixel_aupro_01") == "Pixel AU-PRO (FPR ≤ 0.1)"
    # Unregistered again: gone everywhere.
    assert "pixel_aupro_01" not in compute_metrics(labels, scores, masks, maps).values
    assert "pixel_aupro_01" not in bootstrap_pixel_ci(masks, maps, n_resamples=10)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_image_ci(labels, scores, metrics="image_auroc_copy", n_resamples=10)


def test_cli_tables_show_a_registered_metric(capsys):
    from vadkit.cli import _print_metrics

    with registry.registered(AUPRO_01):
        _print_metrics({"image_auroc": 0.9, "pixel_aupro_01": 0.4321, "n_test": 8, "intervals": {},
                        "per_defect": {"crack": {"image_auroc": 0.8, "pixel_aupro_01": 0.1234}}}, "run")
    printed = capsys.readouterr().out
    assert "pixel_aupro_01" in printed and "0.4321" in printed and "0.1234" in printed


@pytest.mark.parametrize(("changes", "message"), [
    ({"key": "image_auroc"}, "already registered"),
    ({"kind": "voxel"}, "kind must be one of"),
    ({"bootstrap": "images"}, "bootstrap 'images'"),  # a pixel metric cannot resample image scores
    ({"fpr_limit": None}, "fpr_limit is required"),
    ({"statistic": "auroc"}, "fpr_limit is required by \\(and only by\\)"),
    ({"compare": "wilcoxon"}, "kind must be per_image"),
    ({"delong": True}, "DeLong"),
    ({"key": "Pixel-AUPRO"}, "lower-case"),
    ({"needs": "labels"}, "statistic among"),
])
def test_inconsistent_registrations_are_refused(changes, message):
    from dataclasses import asdict

    with pytest.raises(ValueError, match=message):
        registry.register(Metric(**{**asdict(AUPRO_01), **changes}))
    assert "pixel_aupro_01" not in registry.keys()


def test_lookup_errors_name_the_known_keys():
    with pytest.raises(KeyError, match="image_auroc"):
        registry.get("image_aucroc")
    with pytest.raises(TypeError, match="unknown metric attribute"):
        registry.keys(colour="blue")
    assert registry.get("pixel_auspro").fpr_limit == 0.05  # the MVTec LOCO paper's main limit
