"""Uploaded bytes to an RGB image, or a 4xx that names the upload and the fix; the anomaly map back as a PNG.

Only PNG, JPEG, BMP, TIFF and WebP are decoded: Pillow's rarer plugins (EPS runs Ghostscript) are no attack
surface worth offering to the network.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image, UnidentifiedImageError

from vadkit.data.io import to_rgb


DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
#: the image formats decoded (Pillow's names)
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
FORMATS_TEXT = "PNG, JPEG, BMP, TIFF or WebP"


class UploadError(Exception):
    """An upload the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def shown_name(filename: str | None) -> str:
    """The upload's filename as error messages quote it (shortened: it is whatever the client sent)."""
    if not filename:
        return "(no filename)"
    return repr(filename if len(filename) <= 120 else filename[:117] + "...")


def decode_upload(data: bytes, filename: str | None, *, max_pixels: int | None) -> Image.Image:
    """The uploaded bytes as an 8-bit RGB image, or an :class:`UploadError` saying what is wrong with them.

    The pixel count is checked from the header, before the pixels are decoded: a small file can hold a huge
    image (a decompression bomb)."""
    shown = shown_name(filename)
    fix = f"send a {FORMATS_TEXT} image"
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise UploadError(413, "too_large", f"upload {shown} is {width}x{height} pixels, more than this "
                                                    f"server decodes ({max_pixels} pixels); send a smaller image")
            image.load()
            return to_rgb(image)
    except UploadError:
        raise
    except Image.DecompressionBombError as error:
        raise UploadError(413, "too_large", f"upload {shown} is too large to decode ({error}); send a smaller "
                                            "image") from None
    except UnidentifiedImageError:
        raise UploadError(415, "not_an_image", f"upload {shown} is not a readable image (cannot identify image "
                                               f"file); {fix}") from None
    except Exception as error:  # Pillow's decoders raise many types on corrupt data; all of them mean "bad upload"
        detail = str(error)[:200] or "no detail"
        raise UploadError(415, "not_an_image", f"upload {shown} is not a readable image ({type(error).__name__}: "
                                               f"{detail}); {fix}") from None


def heatmap_png(anomaly_map: np.ndarray, pixel_threshold: float | None) -> tuple[str, list[float]]:
    """The (H, W) anomaly map as a base64 PNG in vadkit's colour map, and the ``[low, high]`` map values that
    the two ends of the colours stand for.

    With a calibrated pixel threshold the scale is fixed, 0 to twice the threshold (the threshold is mid-scale),
    so colours mean the same in every response and a normal part looks cool; without one it spans the map's
    own range, as ``vadkit predict``'s overlays do."""
    from vadkit.visualize import colorize

    values = np.asarray(anomaly_map, dtype=np.float32)
    finite = np.isfinite(values)
    if pixel_threshold is not None and math.isfinite(pixel_threshold) and pixel_threshold > 0:
        low, high = 0.0, 2.0 * float(pixel_threshold)
    elif finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
    else:
        low, high = 0.0, 1.0
    buffer = io.BytesIO()
    Image.fromarray(colorize(np.where(finite, values, low), low, high)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), [low, high]
