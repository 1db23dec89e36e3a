"""Synthetic anomalies: seeded generators that turn a normal image into (defective image, defect mask).

Methods that learn from simulated defects (DRAEM, and any self-supervised method or evaluation that needs
planted defects) draw them here. Images are numpy ``(H, W, 3)`` float arrays in [0, 1]; masks are ``(H, W)``
float arrays of 0 and 1. Every generator takes a ``numpy.random.Generator`` (or an int seed): the same seed
gives the same bytes, and nothing here touches numpy's or torch's global random state.

DRAEM's anomalies (Zavrtanik, Kristan, Skocaj, ICCV 2021, arXiv 2108.07610; authors' code
github.com/VitjanZ/DRAEM, ``perlin.py`` and ``data_loader.py``; anomalib's
``anomalib/data/utils/generators/perlin.py``), :class:`PerlinAnomaly`:

* mask: 2-D Perlin noise (:func:`perlin_noise`, the authors' gradient noise with the quintic fade
  ``6t^5 - 15t^4 + 10t^3``, scaled by sqrt 2) whose lattice has ``2^a x 2^b`` cells, ``a, b`` drawn uniformly
  from ``{0, ..., 5}`` (the authors' ``torch.randint(0, 6)``, as anomalib), rotated by an angle drawn
  uniformly in [-90, 90] degrees (imgaug ``Affine(rotate=(-90, 90))``: bilinear, zeros outside), then
  thresholded: ``mask = noise > 0.5``. A mask can be empty (coarse noise rotated away): the image is then
  returned unchanged with its empty mask, which the authors also treat as a normal image;
* anomaly source: an image of ``texture_dir`` (the paper uses DTD, the Describable Textures Dataset), resized
  to the image's size, through 3 distinct augmenters drawn from the paper's 10 (:data:`DRAEM_AUGMENTERS`);
* blending: ``I' = (1 - M) * I + (1 - beta) * M * A + beta * M * I`` with ``beta ~ U(0, 0.8)``;
* probability 0.5 of no anomaly at all (the authors' ``torch.rand(1) > 0.5``): the image unchanged, the
  mask empty.

Deviations from the authors, stated:

* without ``texture_dir`` (DTD cannot be downloaded here) the anomaly source is Perlin noise: one independent
  noise per colour channel, at a scale drawn as the mask's, mapped to [0, 1], then the same 3 augmenters.
  anomalib's fallback (no DTD images) is grey: the mask's own noise, ``0.5 * noise + 0.25``, augmented; inside
  the mask that noise is nearly constant (between 0.5 and ~0.6 before the augmenters), so coloured
  independent noise is used to give the defects a texture. Either way the defects are noise blobs rather
  than real textures: expect a DRAEM weaker than the paper's without ``texture_dir``;
* the augmenters are numpy/Pillow re-implementations of the imgaug ones the authors use, with imgaug's
  parameter ranges (see :data:`DRAEM_AUGMENTERS`); ``MultiplyAndAddToBrightness`` scales and shifts all
  three channels (imgaug works on the luma channel), and the hue/saturation shift works in HSV (imgaug: OpenCV's HSV);
* the authors also rotate the *normal* training image itself with probability 0.3 (imgaug
  ``Affine(rotate=(-90, 90))``, black corners). That is a training-data augmentation of normal images, not an
  anomaly; it is not done here (anomalib does not do it either): on aligned industrial parts, rotated
  images with black corners would widen "normal".

CutPaste (Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for Anomaly Detection and
Localization", CVPR 2021, arXiv 2104.04015; sizes from the paper's supplementary A.2), :func:`cutpaste` and
:func:`cutpaste_scar`:

* normal: a rectangle of area ``U(0.02, 0.15) * H * W`` and aspect ratio (width / height) drawn uniformly from
  (0.3, 1) or (1, 3.3), each with probability 1/2, cut at a random place, colour-jittered, pasted at another
  random place (the patch is kept inside the image);
* scar: a ``w x h`` rectangle, ``w`` uniform in {2..16}, ``h`` in {10..25} pixels, colour-jittered, rotated by
  ``U(-45, 45)`` degrees (nearest neighbour, so the mask is exactly the pasted pixels), pasted at a random place;
* colour jitter: brightness, contrast, saturation and hue each by 0.1 (torchvision ``ColorJitter(0.1, 0.1,
  0.1, 0.1)`` semantics, applied in random order); the paper names the jitter without its magnitude: 0.1 is the
  value of the public re-implementations.

Batches of tensors: :func:`synthesize_batch` applies a generator to every image of a ``(B, 3, H, W)`` tensor
in [0, 1] and returns ``(augmented (B, 3, H, W), masks (B, 1, H, W))`` on the tensor's device, for a method's
``training_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

RngLike = "np.random.Generator | int | None"


def as_generator(rng) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator (returned as is), an int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"expected a numpy Generator, an int seed or None, got {type(rng).__name__}")


# -- Perlin noise ------------------------------------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    return ((6 * t - 15) * t + 10) * t ** 3


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng=None) -> np.ndarray:
    """2-D Perlin (gradient) noise, ``(H, W)`` float32, values within about [-1, 1].

    ``res = (ry, rx)``: lattice cells along each axis. Random unit gradients at the ``(ry + 1) x (rx + 1)``
    lattice corners; at each pixel the dot products with the offsets to its cell's four corners, blended by
    the quintic fade and multiplied by sqrt 2 (the authors' ``rand_perlin_2d_np``). Sizes that are not
    multiples of ``res`` are allowed (pixel ``y`` lies at lattice coordinate ``y * ry / H``).
    """
    rng = as_generator(rng)
    height, width = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if min(height, width, ry, rx) < 1:
        raise ValueError(f"shape and res must be positive, got shape={shape!r}, res={res!r}")
    angles = 2 * math.pi * rng.random((ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)  # unit gradients (which component is which does not matter)
    y = np.arange(height) * (ry / height)
    x = np.arange(width) * (rx / width)
    iy, ix = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        rows, cols = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[rows, cols] * (fy - dy) + gx[rows, cols] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - tx) + corner(0, 1) * tx
    bottom = corner(1, 0) * (1 - tx) + corner(1, 1) * tx
    return (math.sqrt(2) * (top * (1 - ty) + bottom * ty)).astype(np.float32)


def rotate(image: np.ndarray, degrees: float, *, order: int = 1, expand: bool = False) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) rotated counter-clockwise about its centre, zeros outside
    (``order`` 1: bilinear, 0: nearest; ``expand``: grow the canvas to hold the whole rotated image)."""
    from scipy import ndimage

    if image.ndim == 2:
        return ndimage.rotate(image, degrees, reshape=expand, order=order, mode="constant", cval=0.0)
    return ndimage.rotate(image, degrees, axes=(1, 0), reshape=expand, order=order, mode="constant", cval=0.0)


def perlin_mask(shape: tuple[int, int], rng=None, *, scale_exponents: tuple[int, int] = (0, 6),
                rotation: tuple[float, float] = (-90.0, 90.0), threshold: float = 0.5) -> np.ndarray:
    """DRAEM's defect shape: Perlin noise with ``2^a x 2^b`` cells (``a, b`` uniform in
    ``range(*scale_exponents)``, the authors' 0..5), rotated by ``U(*rotation)`` degrees (bilinear, zeros
    outside), thresholded at ``threshold``. Returns ``(H, W)`` float32 of 0 and 1 (possibly empty)."""
    rng = as_generator(rng)
    a, b = rng.integers(*scale_exponents, size=2)
    noise = perlin_noise(shape, (2 ** int(a), 2 ** int(b)), rng)
    noise = rotate(noise, float(rng.uniform(*rotation)))
    return (noise > threshold).astype(np.float32)


# -- the paper's augmenters (imgaug's, re-implemented on [0, 1] float RGB) ------------------------------
def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _gamma_contrast(image, rng):  # iaa.GammaContrast((0.5, 2.0), per_channel=True)
    return np.clip(image, 0, 1) ** rng.uniform(0.5, 2.0, size=3).astype(np.float32)


def _brightness(image, rng):  # iaa.MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))
    return np.clip(image * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30) / 255.0, 0, 1)


def _sharpness(image, rng):  # iaa.pillike.EnhanceSharpness(factor=(0.0, 2.0))
    return _from_pil(ImageEnhance.Sharpness(_to_pil(image)).enhance(rng.uniform(0.0, 2.0)))


def _hue_saturation(image, rng):  # iaa.AddToHueAndSaturation((-50, 50), per_channel=True)
    # imgaug's hue unit: 255 = the whole colour circle; saturation: 255 = full saturation
    hue_shift, saturation_shift = rng.integers(-50, 51, size=2)
    hsv = _rgb_to_hsv(np.clip(image, 0, 1))
    hsv[..., 0] = (hsv[..., 0] + hue_shift / 255.0) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] + saturation_shift / 255.0, 0, 1)
    return _hsv_to_rgb(hsv).astype(np.float32)


def _solarize(image, rng):  # iaa.Solarize(0.5, threshold=(32, 128)): inverts above the threshold, p = 0.5
    if rng.random() >= 0.5:
        return image
    threshold = rng.uniform(32, 128) / 255.0
    return np.where(image >= threshold, 1.0 - image, image)


def _posterize(image, rng):  # iaa.Posterize(nb_bits=(1, 8))
    return _from_pil(ImageOps.posterize(_to_pil(image), int(rng.integers(1, 9))))


def _invert(image, rng):  # iaa.Invert()
    return 1.0 - image


def _autocontrast(image, rng):  # iaa.pillike.Autocontrast(cutoff=(0, 20))
    return _from_pil(ImageOps.autocontrast(_to_pil(image), cutoff=int(rng.integers(0, 21))))


def _equalize(image, rng):  # iaa.pillike.Equalize()
    return _from_pil(ImageOps.equalize(_to_pil(image)))


def _affine_rotate(image, rng):  # iaa.Affine(rotate=(-45, 45))
    return rotate(image, float(rng.uniform(-45, 45)))


#: The 10 augmenters of DRAEM's anomaly source (authors' ``data_loader.py``), 3 distinct ones per anomaly.
DRAEM_AUGMENTERS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (
    _gamma_contrast, _brightness, _sharpness, _hue_saturation, _solarize, _posterize, _invert, _autocontrast,
    _equalize, _affine_rotate,
)


def augment_texture(texture: np.ndarray, rng=None, n: int = 3) -> np.ndarray:
    """``n`` distinct augmenters of :data:`DRAEM_AUGMENTERS`, drawn at random, applied in the drawn order."""
    rng = as_generator(rng)
    for index in rng.choice(len(DRAEM_AUGMENTERS), size=n, replace=False):
        texture = DRAEM_AUGMENTERS[int(index)](texture, rng)
    return np.clip(texture, 0.0, 1.0).astype(np.float32)


def noise_texture(shape: tuple[int, int], rng=None) -> np.ndarray:
    """The anomaly source without texture images: per channel an independent Perlin noise (scale drawn as
    :func:`perlin_mask`'s), mapped linearly to [0, 1]. ``(H, W, 3)`` float32."""
    rng = as_generator(rng)
    channels = []
    for _ in range(3):
        a, b = rng.integers(0, 6, size=2)
        noise = perlin_noise(shape, (2 ** int(a), 2 ** int(b)), rng)
        channels.append(np.clip(noise / 2 + 0.5, 0.0, 1.0))  # |noise| <= sqrt(2)/2 * 2 in theory; ~[-1, 1]
    return np.stack(channels, axis=-1).astype(np.float32)


def blend(image: np.ndarray, mask: np.ndarray, texture: np.ndarray, beta: float) -> np.ndarray:
    """DRAEM's blending: ``(1 - M) * I + (1 - beta) * M * A + beta * M * I`` (M broadcast over channels)."""
    m = mask[..., None]
    return ((1 - m) * image + (1 - beta) * m * texture + beta * m * image).astype(np.float32)


class PerlinAnomaly:
    """DRAEM's simulated anomalies (see the module docstring). ``generator(image, rng) -> (image', mask)``.

    Args:
        texture_dir: folder of anomaly source images (the paper's DTD; searched recursively for images), or
            None for the Perlin-noise texture (:func:`noise_texture`).
        probability: chance that an image gets an anomaly (the authors' 0.5).
        beta: range of the blend factor ``beta`` (weight of the *original* image inside the mask; the
            authors' (0, 0.8)).
        scale_exponents, rotation, threshold: the mask (:func:`perlin_mask`).
    """

    def __init__(self, texture_dir: str | Path | None = None, *, probability: float = 0.5,
                 beta: tuple[float, float] = (0.0, 0.8), scale_exponents: tuple[int, int] = (0, 6),
                 rotation: tuple[float, float] = (-90.0, 90.0), threshold: float = 0.5) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}")
        if not 0.0 <= beta[0] <= beta[1] <= 1.0:
            raise ValueError(f"beta must be a (low, high) range within [0, 1], got {beta!r}")
        if not 0 <= scale_exponents[0] < scale_exponents[1]:
            raise ValueError(f"scale_exponents must be a (low, high) range of integers >= 0, got {scale_exponents!r}")
        self.probability, self.beta = float(probability), (float(beta[0]), float(beta[1]))
        self.scale_exponents, self.rotation, self.threshold = tuple(scale_exponents), tuple(rotation), threshold
        self.texture_paths: list[Path] = []
        if texture_dir is not None:
            from vadkit.data.io import IMAGE_EXTENSIONS

            root = Path(texture_dir)
            if not root.is_dir():
                raise ValueError(f"texture_dir {str(root)!r} is not a folder of texture images")
            self.texture_paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.texture_paths:
                raise ValueError(f"texture_dir {str(root)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")

    def texture(self, shape: tuple[int, int], rng) -> np.ndarray:
        """An anomaly source image of ``shape`` before augmentation: a random texture file, or noise."""
        if not self.texture_paths:
            return noise_texture(shape, rng)
        from vadkit.data.io import load_image

        path = self.texture_paths[int(rng.integers(len(self.texture_paths)))]
        image = load_image(path).resize((shape[1], shape[0]), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 255.0

    def __call__(self, image: np.ndarray, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (H, W, 3) float in [0, 1] -> ``(image', mask (H, W) of 0/1)``; all draws from ``rng``.

        The draws happen whether or not the anomaly is kept, so every image consumes the same random stream
        structure (as the authors' loader, which also decides "no anomaly" last)."""
        rng = as_generator(rng)
        image = np.asarray(image, dtype=np.float32)
        shape = image.shape[:2]
        texture = augment_texture(self.texture(shape, rng), rng)
        mask = perlin_mask(shape, rng, scale_exponents=self.scale_exponents, rotation=self.rotation,
                           threshold=self.threshold)
        beta = float(rng.uniform(*self.beta))
        if rng.random() >= self.probability:
            return image.copy(), np.zeros(shape, np.float32)
        return blend(image, mask, texture, beta), mask


# -- CutPaste -----------------------------------------------------------------------------------------
def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    maximum, minimum = rgb.max(-1), rgb.min(-1)
    delta = maximum - minimum
    safe = np.where(delta > 0, delta, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(maximum == r, ((g - b) / safe) % 6, np.where(maximum == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(delta > 0, hue / 6.0, 0.0)
    saturation = np.where(maximum > 0, delta / np.where(maximum > 0, maximum, 1.0), 0.0)
    return np.stack([hue, saturation, maximum], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0] * 6.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    return np.choose(i[..., None], choices)


def color_jitter(image: np.ndarray, rng=None, strength: float = 0.1) -> np.ndarray:
    """torchvision's ``ColorJitter(b, c, s, h)`` with all four = ``strength``: brightness, contrast and
    saturation factors ``U(1 - strength, 1 + strength)``, hue shift ``U(-strength, strength)`` of the colour
    circle, in a random order."""
    rng = as_generator(rng)
    image = np.asarray(image, dtype=np.float32)
    for step in rng.permutation(4):
        if step == 0:
            image = np.clip(image * rng.uniform(1 - strength, 1 + strength), 0, 1)
        elif step == 1:
            grey = (image @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
            image = np.clip(grey + rng.uniform(1 - strength, 1 + strength) * (image - grey), 0, 1)
        elif step == 2:
            grey = (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            image = np.clip(grey + rng.uniform(1 - strength, 1 + strength) * (image - grey), 0, 1)
        else:
            hsv = _rgb_to_hsv(image)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-strength, strength)) % 1.0
            image = _hsv_to_rgb(hsv)
    return image.astype(np.float32)


def _paste(image: np.ndarray, patch: np.ndarray, patch_mask: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``patch`` where ``patch_mask`` is set, at a random place that keeps it inside the image."""
    height, width = image.shape[:2]
    ph, pw = patch_mask.shape
    top, left = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
    mask = np.zeros((height, width), np.float32)
    mask[top:top + ph, left:left + pw] = patch_mask
    out = image.copy()
    region = out[top:top + ph, left:left + pw]
    out[top:top + ph, left:left + pw] = np.where(patch_mask[..., None] > 0, patch, region)
    return out, mask


def cutpaste(image: np.ndarray, rng=None, *, area_ratio: tuple[float, float] = (0.02, 0.15),
             aspect_ratio: Sequence[tuple[float, float]] = ((0.3, 1.0), (1.0, 3.3)),
             jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste (normal): ``image`` (H, W, 3) float in [0, 1] -> ``(image', mask (H, W) of 0/1)``; the mask is
    the pasted rectangle of about ``area_ratio`` of the image (sides rounded down, at least 1 pixel)."""
    rng = as_generator(rng)
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    area = rng.uniform(*area_ratio) * height * width
    low, high = aspect_ratio[int(rng.integers(len(aspect_ratio)))]
    aspect = rng.uniform(low, high)  # width / height
    pw = int(np.clip(int(math.sqrt(area * aspect)), 1, width))
    ph = int(np.clip(int(math.sqrt(area / aspect)), 1, height))
    top, left = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
    patch = image[top:top + ph, left:left + pw]
    patch = color_jitter(patch, rng, jitter) if jitter else patch
    return _paste(image, patch, np.ones((ph, pw), np.float32), rng)


def cutpaste_scar(image: np.ndarray, rng=None, *, width: tuple[int, int] = (2, 16),
                  height: tuple[int, int] = (10, 25), rotation: tuple[float, float] = (-45.0, 45.0),
                  jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste-Scar: a thin ``w x h`` patch (bounds inclusive), jittered, rotated (nearest neighbour, so the
    mask is exactly the pasted pixels), pasted at a random place. Returns ``(image', mask (H, W) of 0/1)``."""
    rng = as_generator(rng)
    image = np.asarray(image, dtype=np.float32)
    full_h, full_w = image.shape[:2]
    pw = min(int(rng.integers(width[0], width[1] + 1)), full_w)
    ph = min(int(rng.integers(height[0], height[1] + 1)), full_h)
    top, left = int(rng.integers(0, full_h - ph + 1)), int(rng.integers(0, full_w - pw + 1))
    patch = image[top:top + ph, left:left + pw]
    patch = color_jitter(patch, rng, jitter) if jitter else patch
    angle = float(rng.uniform(*rotation))
    patch = rotate(patch, angle, order=0, expand=True)
    patch_mask = rotate(np.ones((ph, pw), np.float32), angle, order=0, expand=True)
    if patch_mask.shape[0] > full_h or patch_mask.shape[1] > full_w:  # a tiny image: crop the rotated patch
        patch, patch_mask = patch[:full_h, :full_w], patch_mask[:full_h, :full_w]
    return _paste(image, patch, patch_mask, rng)


# -- batches of tensors ---------------------------------------------------------------------------------
def synthesize_batch(images, generator: Callable, rng=None):
    """Apply ``generator(image (H, W, 3), rng) -> (image', mask)`` to every image of ``images``, a torch
    tensor (B, 3, H, W) in [0, 1]. Returns ``(augmented (B, 3, H, W), masks (B, 1, H, W))``, float32 tensors on
    ``images``' device. The images are drawn in order from one ``rng`` (a Generator or a seed)."""
    import torch

    rng = as_generator(rng)
    array = images.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    outputs, masks = zip(*(generator(image, rng) for image in array))
    augmented = torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2).contiguous()
    mask = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    return augmented.to(images.device), mask.to(images.device)
