"""The validation part of a split: where decision thresholds are calibrated without seeing the test labels.

A threshold chosen on the test split (the MVTec habit, for want of a validation split) makes the reported
precision, recall and false-alarm rate optimistic: the test labels picked it. vadkit calibrates on a
validation part instead, from one of two sources:

* held-out training normals (:func:`hold_out_validation`): a seeded fraction of the training images, by
  the same rule as every split (:func:`vadkit.data.splitting.split_normals`). Normal images only, so the
  thresholds come from the normal score distribution (a quantile, see ``AnomalyModel.calibrate``). The
  default takes :data:`DEFAULT_VAL_RATIO` of them when there are at least :data:`MIN_TRAIN_FOR_DEFAULT_VAL`
  training images (below that, a tenth is one or two images, which pins a quantile to one score);
* a folder of its own (:func:`validation_folder`): normals and, optionally, defects with masks, in the
  ``folder`` layout (``good/``, one folder per defect type, masks in ``masks/`` or ``ground_truth/``), or a
  flat folder of normal images. With defects the thresholds are F1-optimal on it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vadkit.data.io import list_images
from vadkit.data.samples import NORMAL, Sample, Split
from vadkit.data.splitting import check_fraction, split_normals
from vadkit.errors import DataError

#: fraction of the training normals held out for calibration when none is asked for
DEFAULT_VAL_RATIO = 0.1
#: fewest training images for which the default hold-out applies
MIN_TRAIN_FOR_DEFAULT_VAL = 20


def default_val_ratio(n_train: int) -> float:
    """:data:`DEFAULT_VAL_RATIO` when ``n_train`` >= :data:`MIN_TRAIN_FOR_DEFAULT_VAL`, else 0 (no hold-out)."""
    return DEFAULT_VAL_RATIO if n_train >= MIN_TRAIN_FOR_DEFAULT_VAL else 0.0


def hold_out_validation(split: Split, val_ratio: float, seed: int = 0) -> Split:
    """``split`` with ``val_ratio`` of its training images moved to ``val`` (seeded; 0 moves none)."""
    val_ratio = check_fraction(val_ratio, "val_ratio", allow_zero=True)
    if val_ratio == 0:
        return split
    # the shared rule on the sorted paths; both parts keep the layout's order
    ordered = sorted(split.train, key=lambda sample: str(sample.image_path))
    _, held = split_normals(range(len(ordered)), 1.0 - val_ratio, seed, what="training images",
                            ratio_text=f"val_ratio={val_ratio}")
    held_out = {ordered[i] for i in held}
    train = [sample for sample in split.train if sample not in held_out]
    val = [sample for sample in split.train if sample in held_out]
    return replace(split, train=train, val=val)


def validation_folder(path: str | Path) -> list[Sample]:
    """Validation samples from a folder: a flat folder of normal images, or the ``folder`` layout's
    ``good/`` + defect folders (+ masks)."""
    from vadkit.data.layouts import folder

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"validation folder {path} {'is not a folder' if path.exists() else 'does not exist'}; "
                        "check --val")
    flat = list_images(path)
    if flat:
        return [Sample(image, NORMAL, "good") for image in flat]
    if not (path / "good").is_dir():
        raise DataError(f"validation folder {path} has neither images nor a good/ folder: put normal images in it, "
                        "or good/ plus one folder per defect type (masks in masks/ or ground_truth/)")
    split = folder(path, test_ratio=0.0)
    return split.train + split.test


def with_validation(split: Split, *, val_ratio: float | None = None, val: str | Path | None = None,
                    seed: int = 0) -> Split:
    """The split with its validation part: the folder ``val`` when given (training images untouched), else
    ``val_ratio`` of the training normals (None: :func:`default_val_ratio`)."""
    if val is not None:
        if val_ratio:
            raise DataError("give a validation folder (--val) or a hold-out ratio (--val-ratio), not both")
        return replace(split, val=validation_folder(val))
    ratio = default_val_ratio(len(split.train)) if val_ratio is None else val_ratio
    return hold_out_validation(split, ratio, seed)
