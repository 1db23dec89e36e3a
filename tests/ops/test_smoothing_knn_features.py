import numpy as np
import pytest
import scipy.ndimage
import torch

from vadkit.ops.knn import NearestNeighbours
from vadkit.ops.patch_features import flatten_patches, local_average, pyramid_embedding
from vadkit.ops.smoothing import gaussian_blur, gaussian_kernel1d, to_image_maps


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
    maps = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur(maps, sigma).numpy()
    # torch 'reflect' padding does not repeat the edge pixel: scipy calls that mode 'mirror'
    expected = np.stack([scipy.ndimage.gaussian_filter(m.numpy().astype(np.float64), sigma, mode="mirror",
                                                       truncate=4.0) for m in maps])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_kernel_is_normalised_and_blur_keeps_constant_maps():
    assert gaussian_kernel1d(4.0).sum().item() == pytest.approx(1.0)
    flat = torch.full((2, 10, 10), 3.0)  # smaller than the kernel radius: replicate padding path
    torch.testing.assert_close(gaussian_blur(flat, 4.0), flat)


def test_to_image_maps_upsamples_to_the_input_size():
    out = to_image_maps(torch.rand(2, 8, 8), (64, 64), sigma=4.0)
    assert out.shape == (2, 64, 64)


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(300, 12)).astype(np.float32), rng.normal(size=(50, 12)).astype(np.float32)
    distances, indices = NearestNeighbours(bank).search(queries, k=3)
    brute = np.linalg.norm(queries[:, None] - bank[None], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :3])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :3], rtol=1e-4, atol=1e-4)


def test_nearest_neighbours_reject_bad_shapes():
    index = NearestNeighbours(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(Q, 3\)"):
        index.search(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        NearestNeighbours(np.zeros((0, 3), np.float32))


def test_local_average_is_a_zero_padded_3x3_mean():
    x = torch.rand(1, 2, 6, 7)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    expected = sum(padded[..., i:i + 6, j:j + 7] for i in range(3) for j in range(3)) / 9
    torch.testing.assert_close(local_average(x, 3), expected)


def test_pyramid_embedding_upsamples_deeper_maps_and_concatenates():
    features = {"a": torch.rand(2, 4, 8, 8), "b": torch.rand(2, 6, 4, 4)}
    out = pyramid_embedding(features, ["a", "b"], patch_size=1)
    assert out.shape == (2, 10, 8, 8)
    torch.testing.assert_close(out[:, :4], features["a"])
    flat = flatten_patches(out)
    assert flat.shape == (128, 10)
    torch.testing.assert_close(flat[9], out[0, :, 1, 1])
