"""Training images of a continual step: files of the new task plus images kept in a replay memory.

A replay memory keeps images at the model's input size, either as raw pixels (``uint8`` arrays, H x W x 3 bytes
each) or encoded (JPEG or WebP bytes at a ``quality``: several times more images in the same bytes, the
compressed replay of Pezze et al.). :class:`TrainingImages` is the dataset a model fits on: a list whose entries
are image files or stored images, read with the model's transform, so the one training loop and the one-pass
``fit`` take it like any dataset (it has ``transform`` and ``with_transform``, what ``AnomalyModel.as_dataset``
accepts).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vadkit.errors import ParameterError

__all__ = ["CODECS", "StoredImage", "TrainingImages", "store_image"]

#: Pillow format names of the encodings a compressed replay may use
CODECS = {"jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class StoredImage:
    """An image kept in memory at the model's output size: raw pixels (``codec=None``, ``data`` an (H, W, 3)
    uint8 array) or encoded bytes (``codec`` in :data:`CODECS`)."""

    data: np.ndarray | bytes
    codec: str | None = None

    @property
    def nbytes(self) -> int:
        """What it costs in memory: the array's bytes, or the encoded stream's length."""
        return int(self.data.nbytes) if self.codec is None else len(self.data)

    def pixels(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        if self.codec is None:
            return self.data
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            return np.asarray(image.convert("RGB"))


def store_image(path: str | Path, transform, codec: str | None = None, quality: int = 75) -> StoredImage:
    """Read ``path`` and keep it as the model sees it (resized and cropped by ``transform``, not normalised), raw
    or encoded with ``codec`` at ``quality`` (1-100)."""
    from vadkit.data import load_image

    pixels = transform.display_array(load_image(path))
    if codec is None:
        return StoredImage(pixels)
    if codec not in CODECS:
        raise ParameterError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=CODECS[codec], quality=int(quality))
    return StoredImage(buffer.getvalue(), codec)


class TrainingImages(torch.utils.data.Dataset):
    """A torch-style dataset of image files and :class:`StoredImage` entries, read with ``transform``; items are
    ``{"image": (3, H, W) float tensor}``."""

    def __init__(self, entries: list[str | Path | StoredImage], transform) -> None:
        self.entries, self.transform = list(entries), transform

    def with_transform(self, transform) -> TrainingImages:
        return TrainingImages(self.entries, transform)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        if isinstance(entry, StoredImage):
            pixels = entry.pixels()
            # stored at the output size already: normalise only (resizing and cropping again would distort it)
            mean, std = np.asarray(self.transform.mean, np.float32), np.asarray(self.transform.std, np.float32)
            values = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
            return {"image": torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))}
        from vadkit.data import load_image

        return {"image": self.transform.image(load_image(entry))}
