"""FastFlow: the coupling step against brute-force Jacobians, loss and map against the formulas, a short real fit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ParameterError
from vadkit.models.fastflow import CouplingStep, StageFlow, fastflow_loss, likelihood_map
from tests.conftest import assert_detects_planted_defects


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def randomised_step(channels: int, kernel_size: int, seed: int = 0) -> CouplingStep:
    """A step whose parameters are far from their initialisation, so that every term of the log-det matters."""
    torch.manual_seed(seed)
    step = CouplingStep(channels, kernel_size, hidden_ratio=1.0, clamp=2.0).double()
    with torch.no_grad():
        for parameter in step.parameters():
            parameter.add_(torch.randn_like(parameter) * 3)  # large subnet outputs: the tanh clamp is active
    return step


@pytest.mark.parametrize("channels, kernel_size", [(5, 3), (4, 1), (3, 3)])
def test_the_coupling_step_is_invertible_and_its_log_det_is_the_jacobians(channels, kernel_size):
    step = randomised_step(channels, kernel_size)
    x = torch.randn(2, channels, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, log_det = step(x)
        torch.testing.assert_close(step.inverse(z), x, rtol=1e-10, atol=1e-10)
    assert log_det.shape == (2,)
    for i in range(len(x)):  # brute force: the full (C h w) x (C h w) Jacobian of one image
        jacobian = torch.autograd.functional.jacobian(lambda v: step(v[None])[0][0], x[i])
        n = x[i].numel()
        _, expected = torch.linalg.slogdet(jacobian.reshape(n, n))
        assert float(log_det[i]) == pytest.approx(float(expected), rel=1e-9, abs=1e-9)


def test_a_stage_flow_sums_its_steps_log_dets_and_starts_as_the_layernorm():
    torch.manual_seed(0)
    flow = StageFlow((6, 4, 4), steps=4, hidden_ratio=1.0, clamp=2.0, conv3x3_only=False).double()
    assert [step.subnet[0].kernel_size for step in flow.steps] == [(3, 3), (1, 1), (3, 3), (1, 1)]
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64)
    z, log_det = flow(x)
    expected, v = torch.zeros(3, dtype=torch.float64), flow.norm(x)
    for step in flow.steps:
        v, d = step(v)
        expected += d
    torch.testing.assert_close(z, v)
    torch.testing.assert_close(log_det, expected)
    # at initialisation the global scale is 1 and the coupling nearly the identity: z is close to a permutation
    # of the normalised features, as FrEIA's initialisation makes it
    normalised = flow.norm(x)
    assert torch.allclose(z.pow(2).sum(1), normalised.pow(2).sum(1), rtol=0.5)
    only3 = StageFlow((6, 4, 4), steps=3, hidden_ratio=0.5, clamp=2.0, conv3x3_only=True)
    assert {step.subnet[0].kernel_size for step in only3.steps} == {(3, 3)}
    assert only3.steps[0].subnet[0].out_channels == 1  # int(3 passive channels * 0.5)


def test_the_loss_and_map_follow_the_reference_formulas():
    generator = torch.Generator().manual_seed(0)
    latents = [torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 6, 4, 4, generator=generator) * 2]
    log_dets = [torch.randn(2, generator=generator) * 10, torch.randn(2, generator=generator) * 10]
    expected = 0.0
    for z, d in zip(latents, log_dets):
        z, d = z.numpy().astype(np.float64), d.numpy().astype(np.float64)
        per_image = 0.5 * (z ** 2).reshape(len(z), -1).sum(1) - d  # negative log-likelihood per image
        expected += per_image.mean()
    assert float(fastflow_loss(latents, log_dets)) == pytest.approx(expected, rel=1e-5)
    manual = torch.zeros(2, 1, 16, 16)
    for z in latents:
        probability = torch.from_numpy(np.exp(-0.5 * (z.numpy() ** 2).mean(1, keepdims=True)))
        manual += F.interpolate(-probability, size=(16, 16), mode="bilinear", align_corners=False)
    result = likelihood_map(latents, (16, 16))
    torch.testing.assert_close(result, manual[:, 0] / len(latents))
    assert float(result.max()) < 0 and float(result.min()) >= -1
    # a latent far from the origin is less likely, so its map is higher (more anomalous)
    far = [z.clone() for z in latents]
    far[0][0, :, 2, 2] = 10
    assert likelihood_map(far, (8, 8))[0, 2, 2] > likelihood_map(latents, (8, 8))[0, 2, 2]


def test_a_short_fit_learns_normal_and_planted_defects_score_higher(split):
    model = vadkit.create_model("fastflow", image_size=64, batch_size=4, max_steps=40)
    model.fit(split.train, val=split.train[:4], progress=False)
    losses = [entry["loss"] for entry in model.history_ if "loss" in entry]
    assert losses[-1] < losses[0]  # the negative log-likelihood goes down
    test, prediction = assert_detects_planted_defects(model, split)


def test_save_and_load_restore_the_flows_and_their_permutations(split, tmp_path):
    model = vadkit.create_model("fastflow", image_size=64, batch_size=4, max_steps=2, flow_steps=3,
                                conv3x3_only=True, seed=3)
    model.fit(split.train, progress=False)
    loaded = vadkit.load(model.save(tmp_path / "f.vad"))
    for a, b in zip(model.flows_, loaded.flows_):
        for step_a, step_b in zip(a.steps, b.steps):
            assert torch.equal(step_a.permutation, step_b.permutation)
    images = torch.stack([ImageDataset(split.test, model.transform)[i]["image"] for i in range(3)])
    a, b = model.predict(images, progress=False), loaded.predict(images, progress=False)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)


def test_the_flows_follow_the_tapped_layers_and_the_input_size():
    model = vadkit.create_model("fastflow", image_size=64)
    assert model.chosen_layers() == ["features.3", "features.6", "features.13"]
    assert model.feature_shapes() == [(24, 16, 16), (32, 8, 8), (96, 4, 4)]
    torch.manual_seed(0)
    model.build_networks()
    assert [len(flow.steps) for flow in model.flows_] == [8, 8, 8]
    assert [tuple(flow.norm.normalized_shape) for flow in model.flows_] == [(24, 16, 16), (32, 8, 8), (96, 4, 4)]
    assert vadkit.create_model("fastflow", image_size=64, crop_size=56).feature_shapes()[0] == (24, 14, 14)
    assert not model.uses_conv3x3_only() and vadkit.create_model("fastflow", backbone="resnet18").uses_conv3x3_only()
    assert vadkit.create_model("fastflow", conv3x3_only=True).uses_conv3x3_only()
    assert not vadkit.create_model("fastflow", backbone="resnet18", conv3x3_only=False).uses_conv3x3_only()


@pytest.mark.parametrize("params, message", [
    ({"flow_steps": 0}, "flow_steps"),
    ({"flow_steps": 2.5}, "flow_steps"),
    ({"hidden_ratio": 0}, "hidden_ratio"),
    ({"hidden_ratio": 0.01}, "without hidden channels"),
    ({"clamp": -1}, "clamp"),
    ({"lr": 0}, "lr"),
    ({"weight_decay": -1e-5}, "weight_decay"),
    ({"conv3x3_only": "yes"}, "conv3x3_only"),
])
def test_bad_parameters_are_refused_at_construction(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("fastflow", **params)
