import pytest
import torch

from vadkit.ops.coreset import coverage_radius, greedy_kcenter, greedy_kcenter_plain, random_projection


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block_size", [16, 100, 5000])
def test_lazy_greedy_selects_exactly_what_plain_greedy_selects(seed, block_size):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, 8, generator=generator) * 4
    points = centres[torch.randint(0, 20, (1500,), generator=generator)] + torch.randn(1500, 8, generator=generator)
    k = 120
    fast = greedy_kcenter(points, k, start=seed, block_size=block_size, progress=False)
    plain = greedy_kcenter_plain(points, k, start=seed)
    assert torch.equal(fast, plain)


def test_selection_is_distinct_and_covers_better_than_random():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3000, 16, generator=generator)
    chosen = greedy_kcenter(points, 200, progress=False)
    assert len(set(chosen.tolist())) == 200
    random_pick = torch.randperm(3000, generator=generator)[:200]
    assert coverage_radius(points, points[chosen]) < coverage_radius(points, points[random_pick])


def test_coverage_radius_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    points, centres = torch.randn(500, 5, generator=generator), torch.randn(7, 5, generator=generator)
    expected = torch.cdist(points.double(), centres.double()).min(1).values.max().item()
    assert coverage_radius(points, centres, chunk=64) == pytest.approx(expected, rel=1e-5)


def test_k_equal_n_selects_every_point_and_bad_k_fails():
    points = torch.randn(50, 3)
    assert sorted(greedy_kcenter(points, 50, progress=False).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="k must be"):
        greedy_kcenter(points, 0)
    with pytest.raises(ValueError, match="k must be"):
        greedy_kcenter(points, 51)


def test_random_projection_roughly_preserves_distances():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(200, 512, generator=generator)
    projected = x @ random_projection(512, 128, seed=0)
    ratio = torch.pdist(projected) / torch.pdist(x)
    assert 0.9 < ratio.mean().item() < 1.1
    assert torch.equal(random_projection(512, 128, seed=0), random_projection(512, 128, seed=0))


def test_ivf_search_covers_almost_as_well_as_exact_greedy():
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(60, 16, generator=generator) * 3
    points = centres[torch.randint(0, 60, (20000,), generator=generator)] + torch.randn(20000, 16, generator=generator)
    exact = greedy_kcenter(points, 3000, search="exact", progress=False)
    approximate = greedy_kcenter(points, 3000, search="ivf", progress=False)
    assert len(set(approximate.tolist())) == 3000
    exact_radius = coverage_radius(points, points[exact])
    assert coverage_radius(points, points[approximate]) <= 1.05 * exact_radius


def test_unknown_search_is_rejected():
    with pytest.raises(ValueError, match="search must be"):
        greedy_kcenter(torch.randn(10, 2), 3, search="fast")


def test_duplicate_points_are_never_chosen_twice():
    points = torch.randn(10, 4).repeat(30, 1)  # 300 points, 10 distinct
    chosen = greedy_kcenter(points, 40, progress=False)
    assert len(set(chosen.tolist())) == 40
    assert coverage_radius(points, points[chosen]) == pytest.approx(0.0, abs=1e-3)
