"""Feature codecs for IoT links: exact payload sizes, bounded reconstruction errors, errors on bad input."""

import numpy as np
import pytest

from vadkit.edge.codecs import Float16Codec, JpegCodec, PQCodec, UniformCodec
from vadkit.errors import ParameterError

C, H, W = 16, 5, 7


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return (rng.normal(0, 1, (C, H, W)) * rng.uniform(0.1, 5, (C, 1, 1)) + rng.normal(0, 3, (C, 1, 1))).astype(np.float32)


def test_float16_round_trip_is_half_precision_and_two_bytes_a_value(features):
    codec = Float16Codec()
    payload = codec.encode(features)
    assert len(payload) == 6 + 2 * C * H * W
    decoded = codec.decode(payload)
    assert decoded.shape == features.shape and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, features, rtol=2 ** -11, atol=2 ** -24)


@pytest.mark.parametrize("bits", [8, 4])
def test_uniform_codes_stay_within_half_a_step_of_each_channel_range(features, bits):
    codec = UniformCodec(bits)
    payload = codec.encode(features)
    values = C * H * W
    assert len(payload) == 6 + 4 * C + (values if bits == 8 else -(-values // 2))
    decoded = codec.decode(payload)
    channels = features.reshape(C, -1)
    lo = channels.min(1).astype(np.float16).astype(np.float32)
    hi = channels.max(1).astype(np.float16).astype(np.float32)
    step = (hi - lo) / ((1 << bits) - 1)
    # half a step, plus what rounding the range to float16 moved the extremes (values beyond it are clipped)
    slack = np.maximum(np.abs(channels.min(1) - lo), np.abs(channels.max(1) - hi))
    error = np.abs(decoded - features).reshape(C, -1).max(1)
    assert (error <= step / 2 + slack + 1e-6).all()
    assert np.unique(decoded.reshape(C, -1)[0]).size <= 1 << bits
    with pytest.raises(ParameterError, match="bits=8 or bits=4"):
        UniformCodec(6)


def test_uniform_codec_handles_a_constant_channel(features):
    features[3] = 2.5
    decoded = UniformCodec(8).decode(UniformCodec(8).encode(features))
    np.testing.assert_allclose(decoded[3], 2.5)


def test_pq_sends_m_bytes_a_patch_and_reconstructs_like_faiss(features):
    import faiss

    rng = np.random.default_rng(1)
    training = rng.normal(0, 1, (2000, C)).astype(np.float32)
    codec = PQCodec(m=4, nbits=8).fit(training)
    payload = codec.encode(features)
    assert len(payload) == 6 + H * W * 4
    decoded = codec.decode(payload)
    vectors = np.ascontiguousarray(features.reshape(C, -1).T)
    # independently of faiss' encoder: every sub-vector decodes to its nearest centroid of the codebook
    pq = codec._pq
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    subvectors = vectors.reshape(len(vectors), pq.M, pq.dsub)
    distances = ((subvectors[:, :, None, :] - centroids[None]) ** 2).sum(-1)  # (N, M, ksub)
    nearest = np.take_along_axis(centroids[None], distances.argmin(-1)[..., None, None], axis=2)[:, :, 0]
    expected = nearest.reshape(len(vectors), C).T.reshape(C, H, W)
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-5)
    # the codebooks carry information: closer than the training mean to in-distribution vectors
    sample = rng.normal(0, 1, (C, H, W)).astype(np.float32)
    pq_error = np.abs(codec.decode(codec.encode(sample)) - sample).mean()
    assert pq_error < np.abs(sample).mean() * 0.8
    with pytest.raises(ParameterError, match="fit the PQ codec"):
        PQCodec().encode(features)
    with pytest.raises(ParameterError, match="divisible by m"):
        PQCodec(m=5).fit(training)
    with pytest.raises(ParameterError, match="at least 256"):
        PQCodec(m=4).fit(training[:100])
    with pytest.raises(ParameterError, match="channels"):
        codec.encode(np.zeros((8, 2, 2), np.float32))


def test_jpeg_baseline_decodes_the_image_and_shrinks_with_quality():
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:64, 0:64]
    image = np.clip(np.stack([x * 4, y * 4, (x + y) * 2], -1) + rng.normal(0, 8, (64, 64, 3)), 0, 255).astype(np.uint8)
    high, low = JpegCodec(95), JpegCodec(30)
    decoded = high.decode(high.encode(image))
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 8
    assert len(low.encode(image)) < len(high.encode(image))
    with pytest.raises(ParameterError, match="quality"):
        JpegCodec(0)


def test_codecs_refuse_what_is_not_one_image_of_features():
    with pytest.raises(ParameterError, match=r"\(C, h, w\) float"):
        Float16Codec().encode(np.zeros((2, 3), np.float32))
    with pytest.raises(ParameterError, match=r"\(C, h, w\) float"):
        UniformCodec().encode(np.zeros((2, 3, 4), np.uint8))
