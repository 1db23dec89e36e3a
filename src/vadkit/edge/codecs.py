"""Codecs for sending features (or the image) over an IoT link: the device runs the backbone, the server scores.

A split deployment (:meth:`vadkit.models.patchcore.PatchCoreGraph.embed` on the device,
:meth:`~vadkit.models.patchcore.PatchCoreGraph.score` on the server) sends one image's patch features
(C, h, w) float32 instead of the image. Raw, they are larger than a JPEG of the image (128 x 32 x 32 x 4 =
512 KiB for MobileNetV2 at 256 px), so they are compressed:

* :class:`Float16Codec`: half precision, 2 bytes a value.
* :class:`UniformCodec` (``bits`` 8 or 4): per-channel uniform quantisation between the channel's minimum
  and maximum in this image (stored as float16 beside the codes); 4-bit codes are packed two to a byte.
* :class:`PQCodec`: product quantisation of every patch vector (faiss ``ProductQuantizer``, M sub-vectors of
  ``nbits`` bits each), codebooks trained once on normal features and held by both ends, so only the codes
  travel: M bytes a patch at 8 bits.
* :class:`JpegCodec`: the baseline, the image itself as JPEG (at the model's input size); the server then runs
  the backbone too.

Every codec's ``encode`` returns the exact bytes that would travel (a tiny header with the shape included), so
``len(encode(x))`` is the payload size measured in BENCHMARKS.md; ``decode`` inverts it. numpy (and faiss for
PQ, Pillow for JPEG) only, no torch: a device can run them.
"""

from __future__ import annotations

import io
import struct
from typing import ClassVar

import numpy as np

from vadkit.errors import ParameterError

_SHAPE = struct.Struct("<HHH")  # (C, h, w) of one image's features


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 3 or not np.issubdtype(features.dtype, np.floating):
        raise ParameterError(f"a codec takes one image's features (C, h, w) float, got {features.dtype} {features.shape}")
    return np.ascontiguousarray(features, dtype=np.float32)


class Codec:
    """``encode(features (C, h, w) float32) -> bytes`` and ``decode(bytes) -> features``; ``name`` for tables."""

    kind: ClassVar[str] = "features"

    @property
    def name(self) -> str:
        raise NotImplementedError

    def encode(self, features: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> np.ndarray:
        raise NotImplementedError


class Float16Codec(Codec):
    name = "float16"

    def encode(self, features: np.ndarray) -> bytes:
        features = _check_features(features)
        return _SHAPE.pack(*features.shape) + features.astype("<f2").tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        shape = _SHAPE.unpack_from(payload)
        return np.frombuffer(payload, "<f2", offset=_SHAPE.size).astype(np.float32).reshape(shape)


class UniformCodec(Codec):
    """Per-channel uniform quantisation to ``bits`` (8 or 4): code = round((x - lo) / (hi - lo) * (2^bits - 1))."""

    def __init__(self, bits: int = 8) -> None:
        if bits not in (4, 8):
            raise ParameterError(f"uniform quantisation takes bits=8 or bits=4, got {bits!r}")
        self.bits = bits

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def encode(self, features: np.ndarray) -> bytes:
        features = _check_features(features)
        channels = features.reshape(features.shape[0], -1)
        # the range is stored in float16, so quantise against the rounded range the decoder will see
        lo = channels.min(axis=1).astype("<f2")
        hi = channels.max(axis=1).astype("<f2")
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
        span = np.maximum(hi32 - lo32, np.float32(1e-12))[:, None]
        levels = (1 << self.bits) - 1
        codes = np.clip(np.rint((channels - lo32[:, None]) / span * levels), 0, levels).astype(np.uint8).ravel()
        if self.bits == 4:
            codes = np.append(codes, np.uint8(0)) if len(codes) % 2 else codes
            codes = (codes[0::2] << 4) | codes[1::2]
        return _SHAPE.pack(*features.shape) + lo.tobytes() + hi.tobytes() + codes.tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        c, h, w = _SHAPE.unpack_from(payload)
        offset = _SHAPE.size
        lo = np.frombuffer(payload, "<f2", c, offset).astype(np.float32)
        hi = np.frombuffer(payload, "<f2", c, offset + 2 * c).astype(np.float32)
        codes = np.frombuffer(payload, np.uint8, offset=offset + 4 * c)
        if self.bits == 4:
            codes = np.stack([codes >> 4, codes & 0x0F], axis=1).ravel()[:c * h * w]
        levels = (1 << self.bits) - 1
        span = np.maximum(hi - lo, np.float32(1e-12))[:, None]
        values = lo[:, None] + codes.reshape(c, h * w).astype(np.float32) / levels * span
        return values.reshape(c, h, w)


class PQCodec(Codec):
    """Product quantisation of each patch vector (C values) into ``m`` codes of ``nbits`` bits.

    :meth:`fit` trains the codebooks on normal patch vectors (N, C) (e.g. PatchCore's memory bank); both ends
    hold them (``m * 2^nbits * C / m`` floats), so they are not part of the per-image payload."""

    def __init__(self, m: int = 16, nbits: int = 8, seed: int = 0) -> None:
        if not (isinstance(m, int) and m >= 1) or nbits not in (4, 6, 8):
            raise ParameterError(f"PQ needs m >= 1 sub-vectors and nbits 4, 6 or 8, got m={m!r}, nbits={nbits!r}")
        self.m, self.nbits, self.seed = m, nbits, seed
        self._pq = None

    @property
    def name(self) -> str:
        return f"pq{self.m}x{self.nbits}"

    def fit(self, vectors: np.ndarray) -> PQCodec:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] % self.m:
            raise ParameterError(f"PQ with m={self.m} needs (N, C) training vectors with C divisible by m, got "
                                 f"{vectors.shape}")
        if len(vectors) < (1 << self.nbits):
            raise ParameterError(f"PQ with nbits={self.nbits} needs at least {1 << self.nbits} training vectors, "
                                 f"got {len(vectors)}")
        self._pq = faiss.ProductQuantizer(vectors.shape[1], self.m, self.nbits)
        self._pq.cp.seed = self.seed
        self._pq.train(vectors)
        return self

    def _fitted(self):
        if self._pq is None:
            raise ParameterError("fit the PQ codec on normal feature vectors before encoding")
        return self._pq

    def encode(self, features: np.ndarray) -> bytes:
        features = _check_features(features)
        pq = self._fitted()
        if features.shape[0] != pq.d:
            raise ParameterError(f"features have {features.shape[0]} channels, the codec was fitted on {pq.d}")
        vectors = np.ascontiguousarray(features.reshape(features.shape[0], -1).T)      # (h*w, C)
        return _SHAPE.pack(*features.shape) + pq.compute_codes(vectors).tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        pq = self._fitted()
        c, h, w = _SHAPE.unpack_from(payload)
        codes = np.frombuffer(payload, np.uint8, offset=_SHAPE.size).reshape(h * w, pq.code_size)
        return np.ascontiguousarray(pq.decode(np.ascontiguousarray(codes)).T).reshape(c, h, w)


class JpegCodec(Codec):
    """The image itself as JPEG at ``quality`` (the baseline the feature codecs are compared with)."""

    kind = "image"

    def __init__(self, quality: int = 90) -> None:
        if not (isinstance(quality, int) and 1 <= quality <= 100):
            raise ParameterError(f"JPEG quality must be an integer in [1, 100], got {quality!r}")
        self.quality = quality

    @property
    def name(self) -> str:
        return f"jpeg{self.quality}"

    def encode(self, image: np.ndarray) -> bytes:
        """``image``: (H, W, 3) uint8 RGB, at the size the server's model takes."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()

    def decode(self, payload: bytes) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
