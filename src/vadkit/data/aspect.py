"""Does a dataset's shape fit the model's input? Advice for images that share one aspect ratio far from square.

Industrial cameras give one image size per station, often far from square (battery_weld: 400 x 256; line-scan
surface images: 500 x 1250). Squeezed into a square, a round defect becomes an ellipse and thin scratches
thinner. ``vadkit train`` reads the training images' sizes (the headers only) and, when they share one aspect
ratio far from the model's, says so and names the input size that keeps it at about the same pixel count, or
``resize=fit_pad``. It advises rather than changes the input: what is best depends on the data (measured in
BENCHMARKS.md, "Input geometry"), and a default that changes with the data would make two runs incomparable.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from PIL import Image

from vadkit.data.samples import Sample
from vadkit.data.transforms import Transform

#: aspect ratios (width / height) within this factor of each other count as one
SAME_ASPECT = 1.05
#: how far from the model's aspect a dataset's must be for advice
ADVISE_BEYOND = 1.3
_SAMPLED = 64


def common_size(samples: Sequence[Sample], sampled: int = _SAMPLED) -> tuple[int, int] | None:
    """The ``(H, W)`` most of the (first ``sampled``) images share up to :data:`SAME_ASPECT`, when at least 90% do;
    None for mixed shapes. Reads image headers only."""
    sizes = []
    for sample in list(samples)[:sampled]:
        try:
            with Image.open(sample.image_path) as image:
                sizes.append((image.height, image.width))
        except Exception:  # unreadable files are the dataset check's business, not this advice's
            continue
    if not sizes:
        return None
    (height, width), _ = Counter(sizes).most_common(1)[0]
    aspect = width / height
    alike = sum(1 for h, w in sizes if max(w / h, aspect) / min(w / h, aspect) <= SAME_ASPECT)
    return (height, width) if alike >= 0.9 * len(sizes) else None


def aspect_advice(transform: Transform, samples: Sequence[Sample], multiple: int = 32) -> str | None:
    """A sentence for the user when the images share an aspect ratio the model's input squeezes by more than
    :data:`ADVISE_BEYOND` (None otherwise, or when the model already keeps it)."""
    if transform.resize != "stretch":
        return None
    size = common_size(samples)
    if size is None:
        return None
    canvas_h, canvas_w = transform.resize_size
    image_aspect, canvas_aspect = size[1] / size[0], canvas_w / canvas_h
    if max(image_aspect, canvas_aspect) / min(image_aspect, canvas_aspect) < ADVISE_BEYOND:
        return None
    pixels = canvas_h * canvas_w  # the same work per image, the shape kept
    height = max(multiple, round(math.sqrt(pixels / image_aspect) / multiple) * multiple)
    width = max(multiple, round(height * image_aspect / multiple) * multiple)
    return (f"the training images are {size[1]}x{size[0]} (width x height, aspect {image_aspect:.2f}) and this model "
            f"squeezes them into {canvas_w}x{canvas_h}: to keep their shape at about the same cost, pass "
            f"--param image_size={height}x{width} (height x width), or --param resize=fit_pad to pad them instead")
