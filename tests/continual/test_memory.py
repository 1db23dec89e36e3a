"""Replay memory: reservoir sampling is uniform, budgets are never exceeded, compressed images are smaller."""

import numpy as np
import pytest

from vadkit.continual.memory import Reservoir, TaskBalancedMemory


def test_reservoir_keeps_each_item_with_equal_probability():
    # 4000 seeded runs of a 20-item stream into a reservoir of 5: each item is kept with probability 1/4. The
    # count of one item is Binomial(4000, 0.25), sd 27.4; the bound is 6 sd (the seeds are fixed anyway, so the
    # test cannot flake; the bound is what a biased sampler, e.g. one that favours late items, would break).
    runs, n, k = 4000, 20, 5
    kept = np.zeros(n)
    for seed in range(runs):
        reservoir = Reservoir(k, np.random.default_rng(seed)).extend(range(n))
        assert len(reservoir) == k and len(set(reservoir.items)) == k
        kept[reservoir.items] += 1
    expected, sd = runs * k / n, np.sqrt(runs * (k / n) * (1 - k / n))
    assert np.abs(kept - expected).max() < 6 * sd
    # and the first and second halves of the stream are kept equally often (a bias test with a tighter bound)
    assert abs(kept[:10].sum() - kept[10:].sum()) < 6 * np.sqrt(2 * runs * k / 4)


def test_shrinking_a_reservoir_keeps_a_uniform_subsample():
    kept = np.zeros(12)
    for seed in range(3000):
        reservoir = Reservoir(6, np.random.default_rng(seed)).extend(range(12))
        reservoir.shrink(3)
        assert len(reservoir) == 3
        kept[reservoir.items] += 1
    expected, sd = 3000 * 3 / 12, np.sqrt(3000 * 0.25 * 0.75)
    assert np.abs(kept - expected).max() < 6 * sd


def test_lazy_items_are_made_only_when_kept():
    made = []

    def thunk(i):
        return lambda: made.append(i) or i

    reservoir = Reservoir(3, np.random.default_rng(0)).extend(thunk(i) for i in range(200))
    assert len(reservoir) == 3 and set(reservoir.items) <= set(made)
    assert len(made) < 40  # a rejected item is never made (about k log(n/k) are)


@pytest.mark.parametrize("budget", [7, 10, 30])
def test_task_balanced_budget_in_images_is_never_exceeded_and_shared_equally(budget):
    memory = TaskBalancedMemory(budget, seed=0)
    for task, size in enumerate([25, 3, 40, 12, 9]):
        memory.add_task([(task, i) for i in range(size)])
        n_tasks = task + 1
        assert memory.total <= budget
        share = budget // n_tasks
        # each task keeps its share, or all its images when it has fewer
        assert memory.counts() == [min(share, s) for s in [25, 3, 40, 12, 9][:n_tasks]]
        assert all(item[0] == t for t, r in enumerate(memory.reservoirs) for item in r.items)


def test_task_balanced_budget_in_bytes_with_unequal_costs():
    rng = np.random.default_rng(1)
    memory = TaskBalancedMemory(5000, cost=len, seed=3)
    for task in range(6):
        memory.add_task([bytes(int(size)) for size in rng.integers(50, 400, size=30)])
        assert memory.total == sum(len(item) for item in memory.items()) <= 5000
        for reservoir in memory.reservoirs:
            assert reservoir.total <= 5000 // (task + 1)
    assert min(memory.counts()) >= 1


def test_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        TaskBalancedMemory(0)


def test_compressed_images_store_fewer_bytes_than_raw_at_the_same_count(mvtec_folder):
    from vadkit.continual.images import StoredImage, TrainingImages, store_image
    from vadkit.data import Transform

    transform = Transform(image_size=64)
    paths = sorted((mvtec_folder / "train" / "good").glob("*.png"))[:6]
    raw = [store_image(path, transform) for path in paths]
    jpeg = [store_image(path, transform, codec="jpeg", quality=75) for path in paths]
    webp = [store_image(path, transform, codec="webp", quality=75) for path in paths]
    assert all(item.nbytes == 64 * 64 * 3 for item in raw)
    assert sum(i.nbytes for i in jpeg) < sum(i.nbytes for i in raw) / 2
    assert sum(i.nbytes for i in webp) < sum(i.nbytes for i in raw) / 2
    # decoded, a stored image is the same picture (JPEG loss is small on these textures) and normalised as a file
    dataset = TrainingImages([paths[0], raw[0], jpeg[0]], transform)
    from_file, from_raw, from_jpeg = (dataset[i]["image"] for i in range(3))
    assert from_raw.shape == (3, 64, 64) and bool((from_file == from_raw).all())
    assert float((from_file - from_jpeg).abs().mean()) < 0.1
    assert isinstance(raw[0], StoredImage) and raw[0].codec is None and jpeg[0].codec == "jpeg"
