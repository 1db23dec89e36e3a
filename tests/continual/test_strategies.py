"""Strategies on two tiny, clearly different tasks (horizontal grey stripes; vertical tinted stripes)."""

import numpy as np
import pytest

from vadkit.continual import TaskStream, make_strategy
from vadkit.data import ImageDataset

PATCHCORE = {"image_size": 64, "coreset_ratio": 0.25}
STFPM = {"image_size": 64, "max_steps": 4, "batch_size": 4}
ADAPTS = {"image_size": 64, "max_steps": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def stream(two_tasks):
    return TaskStream.from_folders({"stripes": two_tasks[0], "turned": two_tasks[1]})


def test_both_selection_rules_pick_the_right_task(stream):
    banks = make_strategy("task_banks", "patchcore", PATCHCORE, {"budget_patches": 100_000})
    for t, task in enumerate(stream):
        banks.learn(t, task, progress=False)
    for j, task in enumerate(stream):
        prediction = banks.predict(list(task.test), progress=False)
        assert set(prediction.task_ids) == {"prototype", "min_score"}
        assert (prediction.task_ids["prototype"] == j).all() and (prediction.task_ids["min_score"] == j).all()


def test_min_score_rule_scores_with_the_lowest_bank(stream):
    banks = make_strategy("task_banks", "patchcore", PATCHCORE, {"budget_patches": 100_000, "selection": "min_score"})
    for t, task in enumerate(stream):
        banks.learn(t, task, progress=False)
    images = list(stream[0].test)
    per_bank = [scorer.predict(images, progress=False).scores for scorer in banks._scorers]
    np.testing.assert_allclose(banks.predict(images, progress=False).scores, np.minimum(*per_bank), rtol=1e-6)


def test_finetuning_changes_the_first_tasks_scores_and_task_banks_do_not(stream):
    first_test = list(stream[0].test)
    finetune = make_strategy("finetune", "stfpm", STFPM)
    finetune.learn(0, stream[0], progress=False)
    before = finetune.predict(first_test).scores
    finetune.learn(1, stream[1], progress=False)
    after = finetune.predict(first_test).scores
    # training continued on the second task only: task 0's scores moved (and clearly, not by rounding)
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()

    banks = make_strategy("task_banks", "patchcore", PATCHCORE, {"budget_patches": 100_000})
    banks.learn(0, stream[0], progress=False)
    before = banks.predict(first_test).scores
    banks.learn(1, stream[1], progress=False)
    np.testing.assert_array_equal(banks.predict(first_test).scores, before)


def test_task_banks_stay_within_the_budget(stream):
    budget = 200  # a task's own bank: 8 images x 64 patches x coreset 0.25 = 128 rows
    banks = make_strategy("task_banks", "patchcore", PATCHCORE, {"budget_patches": budget})
    for t, task in enumerate(stream):
        banks.learn(t, task, progress=False)
        assert sum(len(bank) for bank in banks.banks) <= budget
        assert [len(bank) for bank in banks.banks] == [min(128, budget // (t + 1))] * (t + 1)
    row_bytes = banks.banks[0].shape[1] * 4
    assert banks.memory()["buffer"] == sum(len(b) for b in banks.banks) * row_bytes + 2 * row_bytes  # + prototypes


def test_replay_trains_on_the_new_task_plus_the_memory_and_keeps_equal_shares(stream, monkeypatch):
    replay = make_strategy("replay", "patchcore", PATCHCORE, {"budget_images": 6})
    seen = []
    fit = type(replay.model).fit
    monkeypatch.setattr(type(replay.model), "fit", lambda self, data, **kw: seen.append(len(data)) or fit(self, data, **kw))
    for t, task in enumerate(stream):
        replay.learn(t, task, progress=False)
    assert seen == [8, 8 + 6]  # task 1 trained with the 6 images of task 0 the memory held
    assert replay.buffer.counts() == [3, 3]
    assert replay.memory()["buffer"] == 6 * 64 * 64 * 3


def test_compressed_replay_holds_more_images_in_the_same_bytes(stream):
    raw = make_strategy("replay", "patchcore", PATCHCORE, {"budget_images": 4})
    raw.learn(0, stream[0], progress=False)
    raw_bytes = raw.memory()["buffer"]
    compressed = make_strategy("compressed_replay", "patchcore", PATCHCORE, {"budget_bytes": raw_bytes, "quality": 75})
    for t, task in enumerate(stream):
        compressed.learn(t, task, progress=False)
        assert compressed.buffer.total == compressed.memory()["buffer"] <= raw_bytes
    assert sum(compressed.buffer.counts()) > 4


def test_joint_refits_on_every_image_seen(stream):
    joint = make_strategy("joint", "patchcore", PATCHCORE)
    for t, task in enumerate(stream):
        joint.learn(t, task, progress=False)
    assert len(joint.seen) == 16
    fresh = make_strategy("joint", "patchcore", PATCHCORE)
    fresh.model.fit(list(stream[0].train) + list(stream[1].train), progress=False)
    images = ImageDataset(list(stream[1].test), fresh.model.transform)
    np.testing.assert_allclose(joint.predict(images).scores, fresh.model.predict(images).scores, rtol=1e-6)


def test_adapters_pick_the_right_task_and_leave_earlier_tasks_untouched(stream):
    adapters = make_strategy("adapters", "adapts", ADAPTS)
    first_test = list(stream[0].test)
    adapters.learn(0, stream[0], progress=False)
    before = adapters.predict(first_test)
    one_task = adapters.memory()["model"]
    adapters.learn(1, stream[1], progress=False)
    after = adapters.predict(first_test)
    np.testing.assert_array_equal(after.scores, before.scores)  # task 0's adapters were not trained again
    np.testing.assert_array_equal(after.maps, before.maps)
    for j, task in enumerate(stream):
        assert (adapters.predict(list(task.test)).task_ids["prototype"] == j).all()
    # the memory is the adapters and prototypes of each task, nothing of the shared backbone
    weights = sum(2 * c * c + 2 * c + 4 * c for c in (24, 32, 96)) * 4  # convs, BN affine and running stats
    counters = 3 * 8                                                     # BN's int64 num_batches_tracked
    prototype = (24 + 32 + 96) * 4
    assert one_task == weights + counters + prototype and adapters.memory()["model"] == 2 * one_task
    # an image of task 1 is scored with task 1's adapters: the same maps as task 1's model alone
    model = adapters.model  # fitted last, on task 1
    np.testing.assert_allclose(adapters.predict(list(stream[1].test)).maps,
                               model.predict(list(stream[1].test), progress=False).maps, rtol=1e-5, atol=1e-7)


def test_strategy_parameter_errors():
    from vadkit.errors import ParameterError

    with pytest.raises(ParameterError, match="patchcore"):
        make_strategy("task_banks", "padim", {"image_size": 64})
    with pytest.raises(ParameterError, match="use method adapts"):
        make_strategy("adapters", "stfpm", STFPM)
    with pytest.raises(ParameterError, match="selection"):
        make_strategy("task_banks", "patchcore", PATCHCORE, {"selection": "nearest"})
    with pytest.raises(ParameterError, match="budget_images"):
        make_strategy("replay", "patchcore", PATCHCORE, {"budget_images": 0})
    with pytest.raises(ParameterError, match="quality"):
        make_strategy("compressed_replay", "patchcore", PATCHCORE, {"quality": 0})
    with pytest.raises(ParameterError, match="unknown strategy"):
        make_strategy("ewc", "patchcore", PATCHCORE)
