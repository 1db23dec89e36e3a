"""Synthetic anomalies: seeded, masks that agree with the pixels, the papers' sizes and probabilities."""

import numpy as np
import pytest
import torch
from PIL import Image

from vadkit.data import synthetic
from vadkit.data.synthetic import (DRAEM_AUGMENTERS, PerlinAnomaly, blend, color_jitter, cutpaste, cutpaste_scar,
                                   perlin_mask, perlin_noise, synthesize_batch)


def image(seed: int = 0, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = 0.5 + 0.3 * np.sin(x / 3.0)
    return np.clip(base[..., None] + rng.normal(0, 0.02, (size, size, 3)), 0, 1).astype(np.float32)


GENERATORS = {
    "perlin": PerlinAnomaly(probability=1.0),
    "cutpaste": cutpaste,
    "scar": cutpaste_scar,
}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_anomaly(name):
    generate = GENERATORS[name]
    a, mask_a = generate(image(), 7)
    b, mask_b = generate(image(), np.random.default_rng(7))  # a seed or a Generator: the same stream
    assert a.tobytes() == b.tobytes() and mask_a.tobytes() == mask_b.tobytes()
    others = [generate(image(), seed) for seed in range(8, 12)]
    assert any(o.tobytes() != a.tobytes() or m.tobytes() != mask_a.tobytes() for o, m in others)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_pixels_outside_the_mask_are_untouched_and_the_mask_is_binary(name):
    original = image(1)
    changed_inside = []
    for seed in range(20):
        out, mask = GENERATORS[name](original, seed)
        assert out.shape == original.shape and out.dtype == np.float32 and mask.shape == original.shape[:2]
        assert set(np.unique(mask)) <= {0.0, 1.0}
        outside = mask == 0
        assert np.array_equal(out[outside], original[outside])  # exactly
        if mask.any():
            changed_inside.append(np.mean(np.any(out[mask == 1] != original[mask == 1], axis=-1)))
    assert changed_inside and np.mean(changed_inside) > 0.5  # the mask marks pixels that did change


def test_blending_is_draems_formula():
    rng = np.random.default_rng(0)
    img, texture = rng.random((8, 8, 3)).astype(np.float32), rng.random((8, 8, 3)).astype(np.float32)
    mask = (rng.random((8, 8)) > 0.5).astype(np.float32)
    out = blend(img, mask, texture, 0.3)
    inside = mask == 1
    np.testing.assert_allclose(out[inside], 0.7 * texture[inside] + 0.3 * img[inside], rtol=1e-6)
    assert np.array_equal(out[~inside], img[~inside])
    # beta < 1 changes every masked pixel whose texture differs from the image
    assert np.all(out[inside] != img[inside])


def test_perlin_noise_vanishes_on_its_lattice_and_has_the_asked_scale():
    for res in [(1, 1), (2, 8), (32, 4)]:
        noise = perlin_noise((64, 64), res, 0)
        step_y, step_x = 64 // res[0], 64 // res[1]
        np.testing.assert_allclose(noise[::step_y, ::step_x], 0.0, atol=1e-6)  # gradient noise: 0 at corners
        assert np.abs(noise).max() <= 1.0 + 1e-6 and noise.std() > 0.05
    # a finer lattice varies faster: mean absolute neighbour difference grows with the resolution
    roughness = [np.abs(np.diff(perlin_noise((64, 64), (r, r), 1), axis=1)).mean() for r in (1, 4, 16)]
    assert roughness[0] < roughness[1] < roughness[2]


def test_perlin_mask_draws_the_authors_scales_2_to_the_0_to_5(monkeypatch):
    seen = []
    real = synthetic.perlin_noise

    def recording(shape, res, rng):
        seen.append(tuple(res))
        return real(shape, res, rng)

    monkeypatch.setattr(synthetic, "perlin_noise", recording)
    rng = np.random.default_rng(0)
    for _ in range(300):
        perlin_mask((32, 32), rng)
    scales = {2 ** a for a in range(6)}
    assert {s for pair in seen for s in pair} == scales  # 1, 2, ..., 32 and nothing else
    assert {a for a, _ in seen} == scales and {b for _, b in seen} == scales  # each axis on its own


def test_half_of_the_images_get_no_anomaly():
    n = 400
    always, half = PerlinAnomaly(probability=1.0), PerlinAnomaly()
    with_mask_always = np.mean([always(image(size=32), s)[1].any() for s in range(n)])
    unchanged = [(lambda out_mask: out_mask)(half(image(size=32), s)) for s in range(n)]
    with_mask_half = np.mean([mask.any() for _, mask in unchanged])
    # the drawn masks are rarely empty; half of the images are left out on top of that
    assert with_mask_always > 0.8
    ratio = with_mask_half / with_mask_always
    assert abs(ratio - 0.5) < 4 * np.sqrt(0.25 / n) / with_mask_always
    for out, mask in unchanged:
        if not mask.any():
            assert np.array_equal(out, image(size=32))


def test_cutpaste_area_and_aspect_follow_the_paper():
    size = 128
    areas, aspects = [], []
    for seed in range(300):
        _, mask = cutpaste(image(size=size), seed)
        rows, cols = np.nonzero(mask)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert mask.sum() == height * width  # one rectangle
        areas.append(mask.sum() / size ** 2)
        aspects.append(width / height)
    areas, aspects = np.array(areas), np.array(aspects)
    # sides are rounded down: the area can fall a little under 2%
    assert areas.min() >= 0.015 and areas.max() <= 0.15
    assert abs(areas.mean() - 0.085) < 0.01  # U(0.02, 0.15)
    assert aspects.min() > 0.25 and aspects.max() < 3.6
    assert 0.35 < np.mean(aspects < 1) < 0.65  # (0.3, 1) or (1, 3.3) with probability 1/2


def test_scar_sizes_follow_the_paper():
    ratios = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        _, mask = cutpaste_scar(image(size=64), rng)
        # replay the draws: width in {2..16}, height in {10..25}; nearest-neighbour rotation keeps the area
        replay = np.random.default_rng(seed)
        w, h = int(replay.integers(2, 17)), int(replay.integers(10, 26))
        assert 2 <= w <= 16 and 10 <= h <= 25
        ratios.append(mask.sum() / (w * h))
    # nearest-neighbour rotation keeps most of the area (a 2-pixel-wide scar can lose up to two thirds of it)
    assert min(ratios) > 0.3 and max(ratios) <= 1.2 and 0.75 < np.mean(ratios) <= 1.05


@pytest.mark.parametrize("augmenter", DRAEM_AUGMENTERS, ids=lambda f: f.__name__)
def test_each_augmenter_keeps_the_image_format_and_is_seeded(augmenter):
    texture = image(3)
    a = augmenter(texture, np.random.default_rng(1))
    b = augmenter(texture, np.random.default_rng(1))
    assert a.shape == texture.shape and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_color_jitter_stays_close():
    texture = image(4)
    out = color_jitter(texture, 0, 0.1)
    assert np.abs(out - texture).mean() < 0.1 and not np.array_equal(out, texture)


def test_texture_folder_is_the_anomaly_source(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "sub" / "t.jpg")
    generator = PerlinAnomaly(tmp_path, probability=1.0)
    assert [p.name for p in generator.texture_paths] == ["t.jpg"]
    texture = generator.texture((48, 48), rng)
    assert texture.shape == (48, 48, 3)
    a, mask = generator(image(), 3)
    b, _ = generator(image(), 3)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="not a folder"):
        PerlinAnomaly(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        PerlinAnomaly(tmp_path / "empty")


def test_batches_of_tensors_apply_the_generator_image_by_image():
    images = torch.from_numpy(np.stack([image(i, 32) for i in range(3)])).permute(0, 3, 1, 2)
    generator = PerlinAnomaly(probability=1.0)
    augmented, masks = synthesize_batch(images, generator, 5)
    assert augmented.shape == images.shape and masks.shape == (3, 1, 32, 32) and augmented.dtype == torch.float32
    rng = np.random.default_rng(5)  # the same stream, image after image
    for i in range(3):
        out, mask = generator(images[i].permute(1, 2, 0).numpy(), rng)
        assert np.array_equal(augmented[i].permute(1, 2, 0).numpy(), out)
        assert np.array_equal(masks[i, 0].numpy(), mask)
    again, _ = synthesize_batch(images, generator, 5)
    assert torch.equal(again, augmented)
