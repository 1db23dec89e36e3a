"""The unit of data: one image on disk with its label and optional ground-truth mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NORMAL = 0
ANOMALOUS = 1


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it.

    ``label`` is 0 for a normal (defect-free) image and 1 for an anomalous one. ``defect_type`` is
    ``"good"`` for normal images and the defect class name otherwise. ``mask_path`` points at a binary
    (or soft, thresholded at > 127) ground-truth mask of the same scene, or is ``None``.
    """

    image_path: Path
    label: int = NORMAL
    defect_type: str = "good"
    mask_path: Path | None = None

    def __post_init__(self) -> None:
        if self.label not in (NORMAL, ANOMALOUS):
            raise ValueError(f"label must be 0 (normal) or 1 (anomalous), got {self.label!r} for {self.image_path}")


@dataclass(frozen=True)
class Split:
    """A train/test split as produced by a layout: ``train`` holds normal images only.

    ``val`` is the validation part, where decision thresholds are calibrated so that they never see the test
    labels: held-out training normals or a folder of its own (:mod:`vadkit.data.validation`). Layouts
    leave it empty.
    """

    train: list[Sample]
    test: list[Sample]
    val: list[Sample] = field(default_factory=list)
