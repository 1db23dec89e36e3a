"""Reading images and masks from a user's messy folder.

Real folders mix grayscale, RGBA, palette and 16-bit files, hold stray ``Thumbs.db`` or ``.DS_Store`` files,
and now and then a truncated upload. Everything here returns one canonical form (8-bit RGB images, boolean
masks) or raises :class:`~vadkit.errors.DataError` naming the file and the fix. Nothing here needs torch.

Conversion rules (the same for every caller, so training and inference see identical pixels):

* ``L``, ``LA``, ``P``, ``PA``, ``1`` -> RGB by replicating the gray level / looking up the palette;
  alpha channels are dropped, not composited (a transparent pixel keeps its stored colour).
* 16-bit gray (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` as Pillow opens some 16-bit files) ->
  8-bit by ``round(v * 255 / 65535)`` after clipping to [0, 65535]. This keeps the full 16-bit range
  (a file that only uses the low bits will look dark; that is what the file says).
* ``CMYK`` and every other mode -> Pillow's own ``convert("RGB")``.
* EXIF orientation is not applied: masks are drawn on the stored pixels, so images must stay as stored.

Mask rules (:func:`load_mask`): a mask is reduced to one channel (the maximum over colour channels, so a red
defect on black counts) and a pixel is a defect when its value is above half of full scale: > 127 for 8-bit
masks (soft-edged masks such as MTD's are binarised this way), >= 32768 for 16-bit ones, > 0.5 for float masks
in [0, 1]. Integer masks stored as 0/1 (maximum value <= 1) would be all-normal under that rule, so for them
any value > 0 is a defect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vadkit.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""Lower-case suffixes treated as images; matching is case-insensitive (``X.PNG`` is an image)."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Errors Pillow raises on unreadable files: unknown format, truncated data, bad CRC, absurd headers.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

SKIP_HINT = "remove it or pass skip_bad_images=True (CLI: --skip-bad-images)"


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of :data:`IMAGE_EXTENSIONS`."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder``, sorted by path.

    Non-image files (``.txt``, ``Thumbs.db``) and hidden files (``.DS_Store``, macOS ``._x.png``) are ignored.
    A missing folder is an error rather than an empty list, because it is almost always a typo.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"image folder {folder} {what}; check the path")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p) and not _in_hidden_dir(p, folder))


def _in_hidden_dir(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts[:-1])


def _open_decoded(path: Path, kind: str) -> Image.Image:
    """Open and fully decode ``path``; every failure becomes a DataError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{kind} {path} does not exist; check the path")
    try:
        with Image.open(path) as img:
            img.load()  # decoded pixels stay valid after the file is closed
            return img
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot read {kind} {path} ({type(exc).__name__}: {exc}); {SKIP_HINT}") from exc


def sixteen_to_eight_bit(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit values (0..65535) to uint8 by ``round(v * 255 / 65535)``, clipping out-of-range values."""
    values = np.clip(values.astype(np.float64), 0, 65535)
    return np.rint(values * (255.0 / 65535.0)).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB following the module's conversion rules."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(sixteen_to_eight_bit(np.asarray(img)), mode="L").convert("RGB")
    if img.mode in ("P", "PA"):
        # Through RGBA so that palette transparency is dropped without Pillow's transparency warning.
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as an 8-bit RGB :class:`PIL.Image.Image`.

    Raises :class:`DataError` naming the file if it is missing, corrupt, truncated or not an image.
    """
    return to_rgb(_open_decoded(Path(path), "image"))


def check_image(path: str | Path, kind: str = "image") -> None:
    """Raise :class:`DataError` if ``path`` cannot be decoded; cheaper than :func:`load_image`.

    ``Image.verify()`` alone is not enough: it checks PNG chunk CRCs but accepts a truncated JPEG. So the
    file is decoded for real; JPEGs are decoded at 1/8 scale (``draft``), which still reads every byte of
    the entropy-coded data and so still catches truncation, at a fraction of the cost.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{kind} {path} does not exist; check the path")
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (1, 1))
            img.load()
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot read {kind} {path} ({type(exc).__name__}: {exc}); {SKIP_HINT}") from exc


def _single_channel(img: Image.Image) -> tuple[np.ndarray, float]:
    """The mask as one 2-D array of raw values, and the value that means "fully on" for its mode.

    Colour is reduced by the maximum over RGB (a red defect on black counts); alpha is ignored.
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img), 65535.0
    if img.mode == "F":
        values = np.asarray(img)
        return values, 1.0 if values.size and values.max() <= 1 else 255.0
    if img.mode == "L":
        return np.asarray(img), 255.0
    if img.mode == "LA":
        return np.asarray(img)[..., 0], 255.0
    if img.mode == "1":
        return np.asarray(img.convert("L")), 255.0
    return np.asarray(to_rgb(img)).max(axis=2), 255.0


def binarise_mask(values: np.ndarray, full_scale: float = 255.0) -> np.ndarray:
    """Boolean defect mask from one channel of raw values.

    A pixel is a defect when it is above half of ``full_scale`` (``> 127`` for 8-bit masks, ``>= 32768``
    for 16-bit ones). Masks stored as 0/1 (maximum <= 1, any integer type) use ``> 0`` instead, since half
    of full scale would make them all-normal.
    """
    if full_scale > 1 and values.size and values.max() <= 1:
        return values > 0
    return values > full_scale / 2


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as a boolean ``(H, W)`` array (True = defect).

    ``size`` is ``(W, H)`` as in Pillow; a mask of another size is binarised first and then resized with
    nearest neighbour, so it stays binary and its defect stays where it was (relative to the image).
    """
    img = _open_decoded(Path(path), "mask")
    mask = binarise_mask(*_single_channel(img))
    if size is not None and tuple(size) != img.size:
        resized = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(tuple(size), Image.NEAREST)
        mask = np.asarray(resized) > 127
    return mask
