"""Part annotations: a few normal images with a mask per sub-class, read from one folder.

The folder (``parts=`` of :class:`~vadkit.models.sadsem.SADSeM`)::

    parts/
      parts.txt            one sub-class per line, "<name> global" or "<name> local", e.g.
                             body global
                             cap local
                             label local
      0001.png             an annotated normal image (png, jpg, bmp, tif, webp)
      0001/body.png        its mask of sub-class "body" (nonzero = the part); a part the image lacks has no file
      0001/cap.png
      ...

About ten images per product are enough (the SADSeM paper fine-tunes on 10 per class). Sub-classes tagged
``global`` cover large regions (the object's body), ``local`` ones small parts that lie on them; the masks are
merged into one partition in that a-priori order: every global part in file order, then every local one, each
painted over what came before, so a cap on the body is the cap. Pixels no mask claims are the background
(part 0). Mask files may have any size: they are resized to their image with nearest-neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vadkit.data.io import IMAGE_EXTENSIONS, load_mask
from vadkit.errors import DataError

SCOPES = ("global", "local")
INDEX_FILE = "parts.txt"


@dataclass(frozen=True)
class PartAnnotations:
    """``names``: sub-classes in merge order (globals first); ``images``: the annotated images; ``masks[i]``:
    {sub-class name: mask path} of image i."""

    names: tuple[str, ...]
    images: tuple[Path, ...]
    masks: tuple[dict[str, Path], ...]

    def label_map(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` int64 partition of image ``index`` at ``size``: 0 background, i the i-th sub-class (1-based)."""
        height, width = size
        labels = np.zeros((height, width), dtype=np.int64)
        for part, name in enumerate(self.names, start=1):
            path = self.masks[index].get(name)
            if path is None:
                continue
            mask = Image.fromarray((load_mask(path) != 0).astype(np.uint8) * 255)
            labels[np.asarray(mask.resize((width, height), Image.NEAREST)) > 127] = part
        return labels


def read_part_annotations(folder: str | Path) -> PartAnnotations:
    """Read an annotation folder (module docstring); a DataError names what is wrong and how to fix it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"the part annotation folder {folder} does not exist: give parts=<folder with {INDEX_FILE}, "
                        "the annotated images and their part masks> (see vadkit.segmentation.parts)")
    index = folder / INDEX_FILE
    if not index.is_file():
        raise DataError(f"{folder} has no {INDEX_FILE}: write one sub-class per line, '<name> global' or "
                        "'<name> local' (see vadkit.segmentation.parts)")
    declared: list[tuple[str, str]] = []
    for number, line in enumerate(index.read_text().splitlines(), start=1):
        words = line.split("#")[0].split()
        if not words:
            continue
        if len(words) != 2 or words[1] not in SCOPES:
            raise DataError(f"{index}, line {number}: expected '<name> global' or '<name> local', got {line!r}")
        declared.append((words[0], words[1]))
    names = [name for name, _ in declared]
    if not names or len(set(names)) != len(names):
        raise DataError(f"{index} must name at least one sub-class, each once; got {names}")
    ordered = tuple(name for scope in SCOPES for name, tagged in declared if tagged == scope)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{folder} holds no annotated image: put each normal image beside a folder of its part "
                        "masks (0001.png and 0001/<part>.png)")
    masks = []
    for image in images:
        found = {}
        part_folder = folder / image.stem
        for name in ordered:
            path = next((part_folder / f"{name}{suffix}" for suffix in (".png", ".bmp", ".tif", ".tiff")
                         if (part_folder / f"{name}{suffix}").is_file()), None)
            if path is not None:
                found[name] = path
        if not found:
            raise DataError(f"annotated image {image} has no part masks: expected {part_folder}/<part>.png for "
                            f"the parts {', '.join(ordered)}")
        unknown = sorted({p.stem for p in part_folder.iterdir() if p.is_file() and not p.name.startswith(".")}
                         - set(ordered))
        if unknown:
            raise DataError(f"{part_folder} holds masks of parts {unknown} that {index} does not declare")
        masks.append(found)
    return PartAnnotations(ordered, tuple(images), tuple(masks))
