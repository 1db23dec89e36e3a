"""The shared training loop (vadkit.models.training), driven through STFPM on tiny generated images."""

import copy

import pytest
import torch

import vadkit
from vadkit.data import load_split
from vadkit.errors import ModelFileError, ParameterError

TINY = {"image_size": 64, "batch_size": 4}


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def stfpm(**params):
    return vadkit.create_model("stfpm", **{**TINY, "max_steps": None, **params})


def weights(model) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.student_.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_each_budget_stops_training(split):
    by_steps = stfpm(max_steps=5).fit(split.train, progress=False)
    assert by_steps.history_[-1] == {"stop": "max_steps=5", "step": 5, "epoch": 1}
    # 12 training images in batches of 4: 3 steps per epoch
    by_epochs = stfpm(epochs=2).fit(split.train, progress=False)
    assert by_epochs.history_[-1]["stop"] == "epochs=2" and by_epochs.history_[-1]["step"] == 6
    by_time = stfpm(epochs=10_000, max_time=1.0).fit(split.train, progress=False)
    last = by_time.history_[-1]
    assert last["stop"] == "max_time=1.0 s" and 0 < last["step"] < 30_000
    assert by_time.history_[-2]["seconds"] < 15  # stopped soon after the second (a loaded machine is slow)


def test_a_seed_gives_the_same_weights_and_another_seed_others(split):
    a, b = stfpm(max_steps=3, seed=1), stfpm(max_steps=3, seed=1)
    assert_same_weights(weights(a.fit(split.train, progress=False)), weights(b.fit(split.train, progress=False)))
    c = stfpm(max_steps=3, seed=2).fit(split.train, progress=False)
    assert not torch.equal(weights(a)["body.features.0.0.weight"], weights(c)["body.features.0.0.weight"])


def test_the_loss_goes_down_and_the_history_records_it(split):
    model = stfpm(epochs=8).fit(split.train, val=split.train[:4], progress=False)
    entries = [entry for entry in model.history_ if "loss" in entry]
    assert len(entries) == 8 and [entry["epoch"] for entry in entries] == list(range(1, 9))
    assert entries[-1]["loss"] < 0.7 * entries[0]["loss"]
    assert all(entry["val_loss"] is not None for entry in entries)


def test_early_stopping_keeps_the_best_weights(split, monkeypatch):
    """Validation losses 3, 1, 2, 2, ...: the second validation is the best; patience 2 stops at the fourth and
    restores the weights of the second, i.e. those after two steps."""
    from vadkit.models.stfpm import STFPM

    losses = iter([3.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    monkeypatch.setattr(STFPM, "validation_loss", lambda self, images: torch.tensor(next(losses)))
    stopped = stfpm(max_steps=20, validate_every=1, patience=2).fit(split.train, val=split.train[:4], batch_size=4,
                                                                    progress=False)
    assert stopped.history_[-1]["stop"].startswith("early stop") and stopped.history_[-1]["step"] == 4
    assert [entry.get("best", False) for entry in stopped.history_[:4]] == [True, True, False, False]
    monkeypatch.undo()
    two_steps = stfpm(max_steps=2).fit(split.train, progress=False)
    assert_same_weights(weights(stopped), weights(two_steps))


def test_a_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(split, tmp_path, monkeypatch):
    from vadkit.models.stfpm import STFPM

    uninterrupted = stfpm(max_steps=7, validate_every=2).fit(split.train, val=split.train[:4], progress=False)
    original_step = STFPM.training_step
    calls = {"n": 0}

    def crash_at_step_six(self, images):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second epoch
        return original_step(self, images)

    monkeypatch.setattr(STFPM, "training_step", crash_at_step_six)
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        stfpm(max_steps=7, validate_every=2).fit(split.train, val=split.train[:4], checkpoint=checkpoint,
                                                 progress=False)
    monkeypatch.undo()
    assert checkpoint.is_file()  # saved at step 4, the last validation before the crash
    resumed = stfpm(max_steps=7, validate_every=2).fit(split.train, val=split.train[:4], checkpoint=checkpoint,
                                                       resume=True, progress=False)
    assert_same_weights(weights(resumed), weights(uninterrupted))
    assert [entry["step"] for entry in resumed.history_] == [entry["step"] for entry in uninterrupted.history_]
    # more budget continues the same training (from its last weights, not its best): the same as training
    # with that budget from the start; other settings are another training
    longer = stfpm(max_steps=9, validate_every=2).fit(split.train, val=split.train[:4], checkpoint=checkpoint,
                                                      resume=True, progress=False)
    straight = stfpm(max_steps=9, validate_every=2).fit(split.train, val=split.train[:4], progress=False)
    assert longer.history_[-1]["step"] == 9
    assert_same_weights(weights(longer), weights(straight))
    assert [entry["step"] for entry in longer.history_] == [entry["step"] for entry in straight.history_]
    with pytest.raises(ModelFileError, match="another training"):
        stfpm(max_steps=9, validate_every=2, lr=0.1).fit(split.train, checkpoint=checkpoint, resume=True,
                                                         progress=False)


def test_a_saved_model_predicts_the_same_on_the_device_it_is_moved_to(split, tmp_path):
    model = stfpm(max_steps=2).fit(split.train, progress=False)
    loaded = vadkit.load(model.save(tmp_path / "m.vad")).to("cpu")
    assert loaded.device == torch.device("cpu") and loaded.history_ == model.history_
    torch.testing.assert_close(torch.from_numpy(loaded.predict(split.test, progress=False).scores),
                               torch.from_numpy(model.predict(split.test, progress=False).scores))
    if torch.cuda.is_available():  # written for GPU machines; the CPU-only CI skips this part
        on_gpu = copy.deepcopy(loaded).to("cuda")
        torch.testing.assert_close(torch.from_numpy(on_gpu.predict(split.test, progress=False).scores),
                                   torch.from_numpy(model.predict(split.test, progress=False).scores),
                                   rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("params, message", [
    ({"epochs": None, "max_steps": None, "max_time": None}, "at least one training budget"),
    ({"max_steps": 0}, "max_steps must be a positive integer"),
    ({"max_time": -1}, "max_time must be a positive number"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"patience": 0}, "patience must be an integer >= 1 or None"),
    ({"lr": 0}, "lr must be a positive number"),
])
def test_bad_training_parameters_fail_at_construction(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("stfpm", **params)


def test_the_cli_trains_checkpoints_resumes_and_predicts_a_trained_method(mvtec_folder, tmp_path):
    import json

    from click.testing import CliRunner

    from vadkit.cli import main

    base = ["train", "--data", str(mvtec_folder), "--model", "stfpm", "--param", "image_size=64", "--param",
            "batch_size=4", "--val-ratio", "0.25", "--quiet", "--threads", "1"]
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, [*base, "--param", "max_steps=6", "--out", run, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "stfpm" and metrics["n_train"] == 9 and metrics["n_val"] == 3
    assert (tmp_path / "run" / "training.ckpt").is_file() and metrics["image_auroc"] > 0.5
    model = vadkit.load(tmp_path / "run" / "model.vad")
    assert model.history_[-1]["stop"] == "max_steps=6" and model.threshold_source == "validation_normals"
    longer = CliRunner().invoke(main, [*base, "--param", "max_steps=8", "--out", run, "--resume"])
    assert longer.exit_code == 0, longer.output
    assert vadkit.load(tmp_path / "run" / "model.vad").history_[-1]["step"] == 8  # continued, not restarted
    predicted = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "run" / "model.vad"),
                                          str(mvtec_folder / "test"), "--out", str(tmp_path / "p"), "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    bad = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "x"), "--device", "tpu9"])
    assert bad.exit_code == 2 and "unknown device" in bad.output


def test_the_hooks_run_around_training_with_the_data_and_the_kept_weights(split, tmp_path):
    calls = []

    class Hooked(type(stfpm(max_steps=1))):
        def before_training(self, dataset):
            calls.append(("before", len(dataset), torch.is_grad_enabled(), self.student_.training))

        def after_training(self, dataset, val):
            calls.append(("after", len(dataset), len(val), weights(self)["body.features.0.0.weight"].clone()))

    model = Hooked(**TINY, max_steps=6, validate_every=2)
    model.fit(split.train, val=split.train[:4], progress=False, checkpoint=tmp_path / "ckpt")
    assert [call[:4] for call in calls[:1]] == [("before", len(split.train), False, False)]
    assert calls[1][:3] == ("after", len(split.train), 4)
    # after_training sees the restored best weights, i.e. the ones prediction uses
    torch.testing.assert_close(calls[1][3], weights(model)["body.features.0.0.weight"], rtol=0, atol=0)
    calls.clear()
    longer = Hooked(**TINY, max_steps=8, validate_every=2)
    longer.fit(split.train, val=split.train[:4], progress=False, checkpoint=tmp_path / "ckpt", resume=True)
    assert [call[0] for call in calls] == ["before", "after"]  # a resumed training prepares again


@pytest.mark.parametrize("n, batch_size, sizes", [
    (43, 32, [32, 11]),        # the partial batch is kept: every image is seen once per epoch
    (12, 4, [4, 4, 4]),
    (13, 4, [4, 4, 5]),        # a lone last image joins the batch before it (no batch of one)
    (3, 32, [3]),              # a set smaller than a batch is one batch
    (1, 8, [1]),
])
def test_an_epoch_is_every_training_image_once(n, batch_size, sizes):
    from vadkit.models.training import epoch_batches

    batches = epoch_batches(n, batch_size)
    assert [len(batch) for batch in batches] == sizes
    assert [i for batch in batches for i in batch] == list(range(n))


def test_training_sees_every_image_in_every_epoch(split, monkeypatch):
    """9 training images at batch 4: the loop used to drop the last image of every epoch (2 steps of 4); now an
    epoch is batches of 4 and 5, and `epochs=3` means 3 passes over all 9 images."""
    from vadkit.models.stfpm import STFPM

    seen = []
    original = STFPM.training_step

    def record(self, images):
        seen.append(images.sum(dim=(1, 2, 3)))
        return original(self, images)

    monkeypatch.setattr(STFPM, "training_step", record)
    train = split.train[:9]
    model = stfpm(epochs=3).fit(train, progress=False)
    assert model.history_[-1] == {"stop": "epochs=3", "step": 6, "epoch": 3}
    assert [len(batch) for batch in seen] == [4, 5] * 3
    reference = STFPM(**TINY, epochs=1).as_dataset(train)
    expected = sorted(float(reference[i]["image"].sum()) for i in range(9))
    for epoch in range(3):
        sums = sorted(float(v) for v in torch.cat(seen[2 * epoch:2 * epoch + 2]))
        assert sums == pytest.approx(expected, rel=1e-5)  # each image exactly once per epoch


def test_starting_an_epoch_draws_nothing_from_the_global_rng(split):
    """Methods draw their anomalies and augmentations from the global torch RNG; the loop's data loader must
    not, or a run resumed mid-epoch (a new loader after the RNG state is restored) would diverge."""
    from vadkit.models.training import _loader, epoch_batches

    dataset = stfpm(epochs=1).as_dataset(split.train)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(iter(_loader(dataset, torch.arange(len(dataset)), epoch_batches(len(dataset), 4), 0, seed=3)))
    assert torch.equal(torch.get_rng_state(), before)
