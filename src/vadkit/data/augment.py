"""Large training sets made from real images: seeded random crops and flips.

Memory-bank methods must be shown to train on big normal sets (MIIC has ~25k training images),
but the real datasets at hand hold hundreds of normals. :class:`AugmentedDataset` makes ``n_images`` items
out of them, each a *real* image seen differently: item ``i`` is a random crop (and random horizontal and
vertical flips) of sample ``i % len(samples)``, then the usual :class:`~vadkit.data.Transform` (resize to the
model's input size, normalise). The crop and flips of item ``i`` depend only on ``(seed, i)`` and the
source image's size, so the same dataset yields the same pixels in any order, in any process.

Crop geometry: a scale ``s`` is drawn uniformly in ``crop`` (default 0.8-1.0); the crop keeps the source's
aspect ratio, is ``round(s * H) x round(s * W)`` pixels (at least 1), and its top-left corner is uniform over
the positions that keep it inside the image. A mask, when the sample has one, takes the same crop and flips.
This is a training-data generator, not a model step: the models' own preprocessing stays deterministic
(see :mod:`vadkit.data.transforms`).

Augmentation changes what "normal" is. A memory-bank model scores a test patch by its distance to the
training patches, and CNN features carry the patch's position relative to the image border (zero padding),
so crops and flips that test images never show widen the normal set and cost accuracy. Measured with
PatchCore (mobilenet_v2, 224 px, coreset 1%) on magnetic_tile, one view per training image: image AUROC
0.962 without augmentation, 0.929 with 95-100% crops, 0.888 with the default 80-100% crops, 0.905 with
flips alone (``benchmarks/bench_streaming.py``). Use a mild ``crop`` and ``flips=False`` when the views
should stay close to the test distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vadkit.data.dataset import ImageDataset
from vadkit.data.io import load_image, load_mask
from vadkit.data.samples import Sample
from vadkit.data.transforms import Transform


@dataclass(frozen=True)
class CropFlip:
    """The geometry of one augmented item, in source-image pixels: crop box, then flips."""

    top: int
    left: int
    height: int
    width: int
    hflip: bool
    vflip: bool


def _check_crop(crop) -> tuple[float, float]:
    low, high = (crop, crop) if isinstance(crop, (int, float)) else tuple(crop)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop must be a scale or a (min, max) pair of scales in (0, 1], got {crop!r}")
    return float(low), float(high)


class AugmentedDataset(Dataset):
    """``n_images`` seeded crops/flips of real ``samples`` (a list of :class:`Sample` or an ImageDataset).

    Items have the :class:`~vadkit.data.ImageDataset` format: ``image`` float ``(3, H, W)`` normalised by
    ``transform``, ``mask`` uint8 ``(H, W)``, ``label``, ``index`` (the item's own index ``i``), ``path`` and
    ``defect_type`` of the source sample ``i % len(samples)``. Every source file is decoded once up front, as
    ImageDataset does (``skip_bad_images`` as there).

    Args:
        samples: the real images.
        transform: resize/normalise step applied to each crop (``None``: ``Transform()``).
        n_images: number of items (default: ``len(samples)``); item ``i`` uses sample ``i % len(samples)``.
        crop: crop side as a fraction of the source side: one scale or a ``(min, max)`` range, in (0, 1].
        flips: random horizontal and vertical flips, each with probability 1/2.
        seed: with ``i``, determines the crop and flips of item ``i``.
    """

    def __init__(self, samples: Sequence[Sample] | ImageDataset, transform: Transform | None = None,
                 n_images: int | None = None, *, crop: float | tuple[float, float] = (0.8, 1.0),
                 flips: bool = True, seed: int = 0, skip_bad_images: bool = False) -> None:
        transform = transform if transform is not None else Transform()
        if isinstance(samples, ImageDataset):
            self._source = samples if samples.transform == transform else ImageDataset(samples.samples, transform)
        else:
            self._source = ImageDataset(samples, transform, skip_bad_images=skip_bad_images)
        self.n_images = len(self._source) if n_images is None else n_images
        if not (isinstance(self.n_images, int) and self.n_images >= 1):
            raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
        self.crop = _check_crop(crop)
        self.flips = bool(flips)
        self.seed = int(seed)
        self._samples = self._source.samples  # one copy (ImageDataset.samples copies on every access)

    # -- the geometry ------------------------------------------------------------------------------------
    def geometry(self, index: int, height: int, width: int) -> CropFlip:
        """Crop box and flips of item ``index`` on a ``height`` x ``width`` source image."""
        rng = np.random.default_rng([self.seed, index])
        scale = rng.uniform(*self.crop) if self.crop[0] < self.crop[1] else self.crop[0]
        crop_h, crop_w = max(1, round(scale * height)), max(1, round(scale * width))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)
        return CropFlip(top, left, crop_h, crop_w, hflip, vflip)

    @staticmethod
    def apply(image: Image.Image, box: CropFlip) -> Image.Image:
        """Crop then flip a PIL image as ``box`` says."""
        image = image.crop((box.left, box.top, box.left + box.width, box.top + box.height))
        if box.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if box.vflip:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        return image

    # -- the Dataset protocol ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index = int(index) % len(self)
        sample = self._samples[index % len(self._samples)]
        image = load_image(sample.image_path)
        box = self.geometry(index, image.height, image.width)
        transform = self.transform
        if sample.mask_path is None:
            mask = np.zeros(transform.output_size, dtype=bool)
        else:
            mask_image = Image.fromarray((load_mask(sample.mask_path) * 255).astype(np.uint8), mode="L")
            mask = transform.mask_array(np.asarray(self.apply(mask_image, box)))
        shown = self.apply(image, box)
        return {
            "image": transform.image(shown),
            "mask": torch.from_numpy(mask.astype(np.uint8)),
            "original_size": torch.tensor([shown.height, shown.width]),
            "label": int(sample.label),
            "index": index,
            "path": str(sample.image_path),
            "defect_type": sample.defect_type,
        }

    # -- views used by models ----------------------------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        """The real source samples (``len(samples)`` of them, not ``n_images``)."""
        return list(self._samples)

    @property
    def transform(self) -> Transform:
        return self._source.transform

    @property
    def labels(self) -> np.ndarray:
        """``(n_images,)`` int64 labels: each item's source label."""
        source = np.array([s.label for s in self._samples], dtype=np.int64)
        return source[np.arange(self.n_images) % len(source)]

    def with_transform(self, transform: Transform) -> AugmentedDataset:
        """The same items (same crops and flips) resized/normalised by another transform."""
        return AugmentedDataset(self._source, transform, self.n_images, crop=self.crop, flips=self.flips,
                                seed=self.seed)

    def __repr__(self) -> str:
        return (f"AugmentedDataset({self.n_images} crops/flips of {len(self._source)} images; crop {self.crop}, "
                f"flips {self.flips}, seed {self.seed}; output {self.transform.output_size})")
