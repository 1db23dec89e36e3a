"""The data layer: samples on disk -> checked, transformed tensors.

* :mod:`~vadkit.data.samples`: :class:`Sample` (one image, its label, its mask) and :class:`Split`.
* :mod:`~vadkit.data.io`: reading images (always 8-bit RGB) and masks (always bool) from messy folders.
* :mod:`~vadkit.data.layouts`: folder layouts (``mvtec``, ``folder``, ``mtd``, ``elpv``) -> :class:`Split`,
  through :func:`load_split` and the :data:`LAYOUTS` registry.
* :mod:`~vadkit.data.validation`: the validation part of a split (held-out normals or a folder), where
  thresholds are calibrated.
* :mod:`~vadkit.data.transforms`: :class:`Transform`, the deterministic resize/crop/normalise step.
* :mod:`~vadkit.data.dataset`: :class:`ImageDataset`, a torch Dataset that checks every file first.
* :mod:`~vadkit.data.augment`: :class:`AugmentedDataset`, many seeded crops/flips of real images (big
  training sets for memory and scale tests).
* :mod:`~vadkit.data.synthetic`: seeded synthetic anomalies (DRAEM's Perlin-noise defects, CutPaste and
  CutPaste-Scar) returning (defective image, mask), and :func:`synthesize_batch` for tensors.

``Transform``, ``ImageDataset`` and ``AugmentedDataset`` need torch; they are imported on first use so that
listing or splitting a dataset (and a CLI's ``--help``) does not pay torch's import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vadkit._lazy import lazy_attributes
from vadkit.data.io import IMAGE_EXTENSIONS, check_image, list_images, load_image, load_mask, to_rgb
from vadkit.data.layouts import LAYOUTS, layout_options, load_split, mvtec_categories, register_layout
from vadkit.data.samples import ANOMALOUS, NORMAL, Sample, Split
from vadkit.data.validation import hold_out_validation, validation_folder, with_validation

if TYPE_CHECKING:
    from vadkit.data.augment import AugmentedDataset
    from vadkit.data.dataset import ImageDataset
    from vadkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform

_LAZY = {
    "AugmentedDataset": "vadkit.data.augment",
    "ImageDataset": "vadkit.data.dataset",
    "Transform": "vadkit.data.transforms",
    "IMAGENET_MEAN": "vadkit.data.transforms",
    "IMAGENET_STD": "vadkit.data.transforms",
    "PerlinAnomaly": "vadkit.data.synthetic",
    "cutpaste": "vadkit.data.synthetic",
    "cutpaste_scar": "vadkit.data.synthetic",
    "perlin_mask": "vadkit.data.synthetic",
    "perlin_noise": "vadkit.data.synthetic",
    "synthesize_batch": "vadkit.data.synthetic",
}

__all__ = [
    "ANOMALOUS",
    "AugmentedDataset",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "NORMAL",
    "ImageDataset",
    "PerlinAnomaly",
    "Sample",
    "Split",
    "Transform",
    "check_image",
    "cutpaste",
    "cutpaste_scar",
    "layout_options",
    "list_images",
    "load_image",
    "load_mask",
    "load_split",
    "mvtec_categories",
    "perlin_mask",
    "perlin_noise",
    "register_layout",
    "synthesize_batch",
    "to_rgb",
    "hold_out_validation",
    "validation_folder",
    "with_validation",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
