"""Pieces every layout shares: the seeded split of normal images and pairing masks with images.

The split rule is the same everywhere so that a split can be reproduced from a sentence: sort the normal
images by path, shuffle them with ``random.Random(seed).shuffle``, take the first
``int(train_fraction * n)`` as training images and the rest as normal test images. (A 1e-9 tolerance keeps
``0.7 * 10`` from becoming 6 through float rounding; it changes nothing for MTD's 0.8.)

Masks are paired with images by file stem: image ``x.png`` takes mask ``x_mask.<ext>`` (MVTec's naming) or,
failing that, ``x.<ext>`` (the naming of many other sets). Masks left over are *orphans*: reported with one
warning, never fatal, because published datasets ship them (battery_weld has 40).
"""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from vadkit.errors import DataError

T = TypeVar("T")
MASK_SUFFIX = "_mask"


def check_fraction(value: float, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float, if it is in (0, 1) (or [0, 1) with ``allow_zero``); DataError otherwise."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not ((value >= 0 if allow_zero else value > 0) and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise DataError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def split_normals(
    items: Sequence[T], train_fraction: float, seed: int, *, what: str = "normal images", ratio_text: str = ""
) -> tuple[list[T], list[T]]:
    """Seeded ``(train, test)`` split of normal images; see the module docstring for the exact rule.

    An empty training side is a DataError worded with ``what`` (e.g. "good images in x/") and ``ratio_text``
    (e.g. "test_ratio=0.9"). An empty test side is left to the caller: it is legitimate when the caller
    asked for no normal test images (``train_fraction=1``), and an error otherwise.
    """
    order = sorted(items)
    random.Random(seed).shuffle(order)
    n_train = int(train_fraction * len(order) + 1e-9)
    train, test = order[:n_train], order[n_train:]
    if not train:
        raise DataError(
            f"the split leaves no training image: {len(order)} {what} with "
            f"{ratio_text or f'train fraction {train_fraction}'}; add normal images or lower the test ratio"
        )
    return train, test


class MaskIndex:
    """Masks found under ``root``, looked up by the stem of the image they belong to.

    When ``type_names`` are given, a mask in ``root/<type>/...`` belongs to that defect type only: an image
    of type ``crack`` never takes a mask from ``root/scratch/``, even if the stems match. ``find`` records
    which masks were used, so :meth:`orphans` can report the rest.
    """

    def __init__(self, masks: Iterable[Path], root: Path | None = None, type_names: Iterable[str] = ()) -> None:
        self._all: list[Path] = sorted(masks)
        self._root = root
        self._type_names = set(type_names)
        self._by_stem: dict[str, list[Path]] = defaultdict(list)
        for mask in self._all:
            self._by_stem[mask.stem].append(mask)
        self._used: set[Path] = set()

    def _type_folder(self, mask: Path) -> str | None:
        """The defect type whose subfolder holds ``mask``, or None for masks outside type folders."""
        if self._root is None:
            return None
        parts = mask.relative_to(self._root).parts
        return parts[0] if len(parts) > 1 and parts[0] in self._type_names else None

    def find(self, image: Path, defect_type: str | None = None) -> Path | None:
        """The mask of ``image``, or None.

        Preference: a mask in the ``defect_type`` folder over one outside type folders, then
        ``<stem>_mask.*`` over ``<stem>.*``. Two equally good candidates make a DataError listing them.
        """
        ranked = []
        for name_rank, key in enumerate((image.stem + MASK_SUFFIX, image.stem)):
            for mask in self._by_stem.get(key, []):
                folder = self._type_folder(mask)
                if folder is None or folder == defect_type:
                    ranked.append(((folder is None, name_rank), mask))
        if not ranked:
            return None
        best_rank = min(rank for rank, _ in ranked)
        best = [mask for rank, mask in ranked if rank == best_rank]
        if len(best) > 1:
            raise DataError(
                f"image {image} matches several masks ({', '.join(map(str, best))}); keep one, or put each "
                "mask in a subfolder named after its defect type"
            )
        self._used.add(best[0])
        return best[0]

    def orphans(self) -> list[Path]:
        """Masks that no image has claimed so far."""
        return [m for m in self._all if m not in self._used]


def warn_orphan_masks(orphans: Sequence[Path], root: Path, limit: int = 5) -> None:
    """One warning for masks without an image: how many, and the first few names (relative to ``root``)."""
    if not orphans:
        return
    names = [_relative(m, root) for m in orphans[:limit]]
    more = ", ..." if len(orphans) > limit else ""
    warnings.warn(
        f"{len(orphans)} mask(s) under {root} have no matching image and are ignored: {', '.join(names)}{more} "
        f"(a mask pairs with the image of the same file stem, with or without a '{MASK_SUFFIX}' suffix)",
        stacklevel=3,
    )


def warn_missing_masks(images: Sequence[Path], root: Path, limit: int = 5) -> None:
    """One warning for anomalous images that have no mask (pixel metrics will be unavailable)."""
    if not images:
        return
    names = [_relative(p, root) for p in images[:limit]]
    more = ", ..." if len(images) > limit else ""
    warnings.warn(
        f"{len(images)} anomalous image(s) under {root} have no ground-truth mask: {', '.join(names)}{more}; "
        "pixel-level metrics need a mask for every anomalous image",
        stacklevel=3,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
