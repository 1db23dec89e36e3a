"""Shared pieces of the foundation-model methods: batch rotations, zero-shot foreground masks, top-fraction means."""

import math

import torch

from vadkit.ops.foreground import first_component_scores, foreground_mask
from vadkit.ops.image_scores import top_fraction_mean
from vadkit.ops.rotation import rotate_batch


def test_rotations_by_quarter_turns_move_pixels_exactly_and_zero_keeps_the_image():
    images = torch.randn(2, 3, 8, 8)
    rotated = rotate_batch(images, [0, 90, 180, 270])
    assert rotated.shape == (8, 3, 8, 8)
    torch.testing.assert_close(rotated[0], images[0], rtol=0, atol=0)
    for k, turned in enumerate(rotated[4:]):  # image 1's rotations, counter-clockwise by k quarter turns
        torch.testing.assert_close(turned, torch.rot90(images[1], k, dims=(1, 2)), rtol=1e-5, atol=1e-5)


def test_a_45_degree_rotation_keeps_the_centre_and_mirrors_the_borders():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    torch.testing.assert_close(rotate_batch(image, [45])[0, 0, 4, 4], torch.tensor(1.0))
    # the corners rotated in from outside the canvas are mirrored image, not zeros: a constant stays constant
    torch.testing.assert_close(rotate_batch(torch.full((1, 3, 9, 12), 2.5), [45, 135]), torch.full((2, 3, 9, 12), 2.5))


def test_the_first_component_and_the_foreground_mask():
    torch.manual_seed(0)
    h = w = 10
    features = torch.randn(1, h * w, 16) * 0.1
    centre = torch.zeros(h, w, dtype=torch.bool)
    centre[3:7, 3:7] = True
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    features[0, centre.flatten()] += 30 * direction                   # an "object" in the middle
    projections = first_component_scores(features)
    # the principal axis separates object from background, with the largest projection positive
    assert projections[0, centre.flatten()].min() > projections[0, ~centre.flatten()].max()
    # the sign check: a threshold the object passes, whatever sign the axis came with
    mask = foreground_mask(features, (h, w), threshold=5.0)[0]
    assert mask[centre].all()
    flipped = foreground_mask(-features, (h, w), threshold=5.0)[0]
    assert flipped[centre].all()
    assert not mask[0, 0] and not mask[9, 9]                            # far corners stay background


def test_top_fraction_mean_against_sorting():
    scores = torch.rand(3, 7, 9)
    for fraction in (0.01, 0.1, 0.5, 1.0):
        k = max(1, int(63 * fraction))
        expected = torch.stack([row.flatten().sort(descending=True).values[:k].mean() for row in scores])
        torch.testing.assert_close(top_fraction_mean(scores, fraction), expected)
    assert math.isclose(float(top_fraction_mean(torch.tensor([[1.0, 5.0, 2.0]]), 0.01)[0]), 5.0)
