"""Raw predictions of a test run, saved so that any metric can be recomputed later without the model.

``vadkit test`` (and ``train``) write ``RUN_DIR/predictions.npz``; ``vadkit eval``, ``compare`` and ``report``
read it back. One ``.npz`` file, read with ``allow_pickle=False`` (no code runs when a file is opened):

- ``scores`` (N,) float32 image scores and ``labels`` (N,) int8 (0 normal, 1 anomalous);
- ``maps`` (N, H, W) anomaly maps as float16 (float32 when a map value exceeds float16's range), compressed;
- ``masks`` (N, H, W) ground truth packed to bits (``np.packbits``): 1/8 byte per pixel, so evaluation needs
  neither the model nor the dataset; ``mask_paths`` and ``paths`` keep the references to the files;
- ``defect_types`` (N,) strings; ``aupimo`` (N,) per-image AUPIMO (NaN = not applicable: a normal image);
- ``meta``: one JSON string: format version, model, the image and pixel thresholds and where they came from,
  transform, data, layout, whether masks exist.

Why float16 maps: a 392-image magnetic_tile test set at 256x256 is 103 MB of float32 maps, 51 MB as float16
before compression; float16 keeps 3 significant digits, far finer than any threshold a user sets. So that
``vadkit eval`` reproduces ``metrics.json`` exactly, the test run computes its metrics from these stored
(float16) maps, not from the float32 ones in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.errors import DataError

__all__ = ["FORMAT_VERSION", "PREDICTIONS_NPZ", "PredictionRecord", "load_record"]

PREDICTIONS_NPZ = "predictions.npz"
FORMAT_VERSION = 1
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class PredictionRecord:
    """Everything a test run predicted, with the ground truth it was scored against.

    Attributes:
        scores: (N,) float image scores. labels: (N,) 0/1. maps: (N, H, W) anomaly maps.
        masks: (N, H, W) bool ground truth, or None when the test set has no masks.
        paths, defect_types, mask_paths: (N,) strings; a mask path is "" when there is none.
        meta: JSON-able facts about the run: ``model``, ``threshold`` (None when uncalibrated), ``transform``...
        aupimo: (N,) per-image AUPIMO (NaN for normal images), or None before evaluation.
    """

    scores: np.ndarray
    labels: np.ndarray
    maps: np.ndarray
    masks: np.ndarray | None
    paths: list[str]
    defect_types: list[str]
    mask_paths: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    aupimo: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        lengths = {"labels": len(self.labels), "maps": len(self.maps), "paths": len(self.paths),
                   "defect_types": len(self.defect_types), "mask_paths": len(self.mask_paths)}
        if self.masks is not None:
            lengths["masks"] = len(self.masks)
            if self.masks.shape != self.maps.shape:
                raise ValueError(f"masks {self.masks.shape} and maps {self.maps.shape} must have the same shape")
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise ValueError(f"a prediction record needs one entry per image ({n} scores); got {wrong}")

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def pixel_threshold(self) -> float | None:
        """The pixel threshold of the maps (None: uncalibrated, or a record written before issue 11)."""
        return self.meta.get("pixel_threshold")

    def flagged(self) -> np.ndarray | None:
        """(N,) bool: the images judged anomalous at the threshold (None when uncalibrated). Compared in float64,
        as in metrics.thresholds: numpy would round the threshold to the scores' float32 otherwise."""
        if self.threshold is None:
            return None
        return self.scores.astype(np.float64) >= self.threshold

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_prediction(cls, dataset, scores, maps, meta: dict[str, Any]) -> PredictionRecord:
        """A record of ``dataset`` (an ImageDataset) scored as ``scores``/``maps``, maps stored at float16.

        The maps are rounded to the stored precision here, so metrics computed from this record equal the
        metrics ``vadkit eval`` computes from the file.
        """
        samples = dataset.samples
        return cls(
            scores=np.asarray(scores, dtype=np.float32),
            labels=np.asarray(dataset.labels, dtype=np.int8),
            maps=_storable_maps(np.asarray(maps)),
            masks=dataset.masks_array() if dataset.has_masks else None,
            paths=[str(Path(s.image_path).resolve()) for s in samples],
            defect_types=[s.defect_type for s in samples],
            mask_paths=["" if s.mask_path is None else str(Path(s.mask_path).resolve()) for s in samples],
            meta={"format_version": FORMAT_VERSION, **meta, "has_masks": bool(dataset.has_masks)},
        )

    def with_aupimo(self, per_image: np.ndarray) -> PredictionRecord:
        return replace(self, aupimo=np.asarray(per_image, dtype=np.float64))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "scores": self.scores, "labels": self.labels, "maps": self.maps,
            "paths": np.array(self.paths, dtype=str), "defect_types": np.array(self.defect_types, dtype=str),
            "mask_paths": np.array(self.mask_paths, dtype=str),
            "meta": np.array(json.dumps(self.meta, default=str)),
        }
        if self.masks is not None:
            arrays["masks"] = np.packbits(self.masks, axis=-1)
        if self.aupimo is not None:
            arrays["aupimo"] = self.aupimo
        target = folder / PREDICTIONS_NPZ
        partial = target.with_suffix(".npz.partial")
        with open(partial, "wb") as handle:  # write then rename: an interrupted run never leaves half a file
            write_npz(handle, arrays)
        partial.replace(target)
        return target


def write_npz(handle, arrays: dict[str, np.ndarray], compresslevel: int = 1) -> None:
    """``np.savez_compressed`` at zlib level 1 instead of 6: float16 maps barely compress (measured on 128 smooth
    256 x 256 maps: 77% of their size at either level), and level 1 takes half the time. ``np.load`` reads it."""
    import zipfile

    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel,
                         allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_record(run_dir: str | Path) -> PredictionRecord:
    """Read ``RUN_DIR/predictions.npz`` (or the file itself); a missing or damaged file is a ``DataError``."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / PREDICTIONS_NPZ
    if not path.is_file():
        raise DataError(f"no raw predictions at {path}: run `vadkit test --model MODEL --data DATA --out "
                        f"{path.parent}` (or `vadkit train`) first; it writes {PREDICTIONS_NPZ}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise DataError(f"{path} has prediction format {version}; this vadkit reads format "
                                f"{FORMAT_VERSION}: re-run `vadkit test` with this version")
            maps = stored["maps"]
            masks = None
            if "masks" in stored.files:
                masks = np.unpackbits(stored["masks"], axis=-1, count=maps.shape[-1]).astype(bool)
            return PredictionRecord(
                scores=stored["scores"], labels=stored["labels"], maps=maps, masks=masks,
                paths=stored["paths"].tolist(), defect_types=stored["defect_types"].tolist(),
                mask_paths=stored["mask_paths"].tolist(), meta=meta,
                aupimo=stored["aupimo"] if "aupimo" in stored.files else None,
            )
    except DataError:
        raise
    except Exception as error:  # zip/npz/JSON damage surfaces as many exception types
        raise DataError(f"{path} is not a readable vadkit predictions file ({type(error).__name__}: {error}); "
                        "re-run `vadkit test` to write it again") from error


def _storable_maps(maps: np.ndarray) -> np.ndarray:
    if maps.size and float(np.abs(maps).max()) > _FLOAT16_MAX:
        return maps.astype(np.float32)  # float16 would turn these values into inf
    return maps.astype(np.float16)
