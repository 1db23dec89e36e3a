"""``TrainedModel.fit(..., warm_start=True)``: continue from the current weights (what continual fine-tuning needs)."""

import torch

import vadkit


def weights(model) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.student_.state_dict().items()}


def same(a, b) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


def fit(samples, **kwargs):
    return vadkit.create_model("stfpm", image_size=64, batch_size=4, max_steps=2, seed=0).fit(samples, progress=False,
                                                                                          **kwargs)


def test_warm_start_continues_and_a_plain_refit_restarts(mvtec_folder):
    from vadkit.data import load_split

    samples = load_split("mvtec", mvtec_folder).train
    model = fit(samples)
    first = weights(model)
    assert same(first, weights(fit(samples)))                   # a fit is a function of the data and the seed
    assert same(first, weights(fit(samples, warm_start=True)))  # warm start on an unfitted model: a normal fit

    model.fit(samples, progress=False)                          # default: re-initialised from the seed
    assert same(first, weights(model))
    model.fit(samples, progress=False, warm_start=True)         # continued: two more steps from `first`
    continued = weights(model)
    assert not same(first, continued)
    assert model.fitted and model.history_[-1]["step"] == 2     # the loop's budget applies to this fit
    model.fit(samples, progress=False)                          # and a plain fit afterwards restarts from the seed
    assert same(first, weights(model))
