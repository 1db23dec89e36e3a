"""EfficientAD and its teacher distillation on tiny inputs: PDN shapes, the losses and the map normalisation
against independent computations, a distilled teacher, short real fits, persistence, errors and the CLI."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ParameterError, WeightsNotFoundError
from vadkit.models.efficientad import (AutoEncoder, EfficientADGraph, decoder_sizes, hard_feature_loss, quantile,
                                       quantile_normalise)
from vadkit.models.pdn import (FeatureTarget, SmallPDN, channel_statistics, distill_layers, distill_teacher,
                               image_source_paths, load_teacher, pdn_output_size, save_teacher)
from tests.conftest import assert_detects_planted_defects

TINY = {"image_size": 64, "batch_size": 2}
STEPS = 20  # distillation steps of the tiny teacher


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module")
def teacher_file(mvtec_folder, tmp_path_factory):
    """A teacher distilled in seconds: 64-px images, a few steps at 10 x the paper's learning rate, on the tiny
    training images."""
    source = str(mvtec_folder / "train")
    teacher, metadata = distill_teacher(image_source_paths(source), steps=STEPS, image_size=64, batch_size=4,
                                        lr=1e-3, stat_images=12, source=source, progress=False)
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pth", teacher, metadata)


@pytest.fixture(scope="module")
def fitted(split, teacher_file):
    model = vadkit.create_model("efficientad", teacher=str(teacher_file), max_steps=12, validate_every=4,
                                 image_size=64, batch_size=1)
    return model.fit(split.train, val=split.train[:4], progress=False)


def test_pdn_and_autoencoder_shapes_follow_the_paper():
    x = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        assert SmallPDN(384, padding=True)(x).shape == (1, 384, 64, 64)     # Table 5's paddings: 256 / 4
        assert SmallPDN(768, padding=False)(x).shape == (1, 768, 56, 56)    # unpadded: 33 x 33 patches
        assert AutoEncoder((256, 256), (56, 56))(x).shape == (1, 384, 56, 56)
        assert AutoEncoder((64, 64), (8, 8))(torch.zeros(2, 3, 64, 64)).shape == (2, 384, 8, 8)
        # a rectangle: each axis as the paper's square would have it
        assert AutoEncoder((64, 128), (8, 24))(torch.zeros(1, 3, 64, 128)).shape == (1, 384, 8, 24)
    assert [pdn_output_size(s, p) for s in (256, 64) for p in (True, False)] == [64, 56, 16, 8]
    assert decoder_sizes((256, 256)) == [(3, 3), (8, 8), (15, 15), (32, 32), (63, 63), (127, 127)]
    assert decoder_sizes((64, 128))[1] == (2, 4)
    assert AutoEncoder((256, 256), (56, 56)).encoder.code.kernel_size == (8, 8)
    assert AutoEncoder((256, 512), (56, 120)).encoder.code.kernel_size == (8, 16)
    layers = [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in SmallPDN(384).modules()
              if isinstance(m, torch.nn.Conv2d)]
    assert layers == [(3, 128, 4), (128, 256, 4), (256, 256, 3), (256, 384, 4)]


def test_hard_feature_loss_and_quantiles_match_numpy():
    distance = torch.rand(2, 384, 7, 9, generator=torch.Generator().manual_seed(0)) ** 3
    values = distance.numpy().ravel()
    threshold = np.quantile(values, 0.999)
    expected = values[values >= threshold].mean()
    assert float(hard_feature_loss(distance)) == pytest.approx(expected, rel=1e-5)
    assert (values >= threshold).sum() == int(np.ceil(0.001 * (values.size - 1)))  # a handful of elements
    for q in (0.0, 0.5, 0.9, 0.995, 1.0):
        assert float(quantile(distance, q)) == pytest.approx(np.quantile(values, q), rel=1e-6)


def test_quantile_normalisation_by_hand():
    maps = torch.tensor([[1.0, 2.0, 3.0, 5.0]])
    # q_a -> 0, q_b -> 0.1, linear in between and beyond
    torch.testing.assert_close(quantile_normalise(maps, 1.0, 3.0), torch.tensor([[0.0, 0.05, 0.1, 0.2]]))


def test_a_distilled_teacher_reproduces_the_backbone_features_better_than_its_random_init(teacher_file, split):
    from vadkit.backbones import create_extractor

    teacher, metadata = load_teacher(teacher_file, padding=True)
    assert metadata["backbone"] == "mobilenet_v2" and metadata["layers"] == distill_layers("mobilenet_v2")
    assert metadata["steps"] == STEPS and metadata["images"].endswith("train") and len(metadata["sha256"]) == 64
    # an independent target: the backbone's PatchCore features at 2 x the size, normalised per channel
    paths = image_source_paths(metadata["images"])
    images = torch.stack([ImageDataset([s], vadkit.data.Transform(128, mean=(0, 0, 0), std=(1, 1, 1)))[0]["image"]
                          for s in split.train])
    psi = FeatureTarget(create_extractor("mobilenet_v2", metadata["layers"]), metadata["layers"])
    with torch.no_grad():
        features = psi(images)
        mean, std = channel_statistics([features])
        target = (features - mean) / std
        small = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        small = (small - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.manual_seed(0)
        random_init = SmallPDN(384, padding=True)
        distilled = float((teacher(small) - target).pow(2).mean())
        untrained = float((random_init(small) - target).pow(2).mean())
    assert len(paths) == 12 and target.shape == (12, 384, 16, 16)
    assert distilled < 0.9 * untrained


def test_a_short_fit_learns_normal_and_planted_defects_score_higher(fitted, split):
    # the validation loss (no penalty draw, no augmentation) goes down
    losses = [entry["val_loss"] for entry in fitted.history_ if "val_loss" in entry]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    test, prediction = assert_detects_planted_defects(fitted, split)


def test_the_maps_are_the_quantile_normalised_average_upsampled(fitted, split):
    val = torch.stack([ImageDataset(split.train[:4], fitted.transform)[i]["image"] for i in range(4)])
    graph = fitted.inference_module()
    with torch.no_grad():
        map_st, map_ae = graph.raw_maps(val)
    q = fitted.quantiles_
    assert q["images"] == "validation" and q["n_images"] == 4
    for key, values in (("st", map_st), ("ae", map_ae)):
        assert q[f"{key}_a"] == pytest.approx(np.quantile(values.numpy(), 0.9), rel=1e-5)
        assert q[f"{key}_b"] == pytest.approx(np.quantile(values.numpy(), 0.995), rel=1e-5)
    pad = ((0, 0), (4, 4), (4, 4))  # 8 x 8 -> 16 x 16 = 64 / 4: the border at distance 0
    st = 0.1 * (np.pad(map_st.numpy(), pad) - q["st_a"]) / (q["st_b"] - q["st_a"])
    ae = 0.1 * (np.pad(map_ae.numpy(), pad) - q["ae_a"]) / (q["ae_b"] - q["ae_a"])
    padded = (st + ae) / 2
    expected = F.interpolate(torch.from_numpy(padded)[:, None], size=(64, 64), mode="bilinear",
                             align_corners=False)[:, 0]
    scores, maps = fitted.predict(val).scores, fitted.predict(val).maps
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores, expected.flatten(1).amax(1).numpy(), rtol=1e-5)
    assert isinstance(graph, EfficientADGraph)


def test_teacher_statistics_are_the_training_images_channel_moments(fitted, split):
    images = torch.stack([ImageDataset(split.train, fitted.transform)[i]["image"] for i in range(len(split.train))])
    with torch.no_grad():
        outputs = fitted.teacher_(images).numpy()
    np.testing.assert_allclose(fitted.teacher_mean_.numpy().ravel(), outputs.mean(axis=(0, 2, 3)), rtol=1e-3,
                               atol=1e-5)
    np.testing.assert_allclose(fitted.teacher_std_.numpy().ravel(), outputs.std(axis=(0, 2, 3), ddof=1), rtol=1e-3)
    assert not any(p.requires_grad for p in fitted.teacher_.parameters())


def test_save_and_load_give_identical_predictions_and_carry_the_teacher(fitted, split, tmp_path, teacher_file):
    path = fitted.save(tmp_path / "m.vad")
    teacher_file_weights = load_teacher(teacher_file)[0].state_dict()
    loaded = vadkit.load(path)  # the teacher travels in the model file
    for key, value in loaded.teacher_.state_dict().items():
        torch.testing.assert_close(value, teacher_file_weights[key])
    assert loaded.backbone_weights_ == fitted.backbone_weights_ and loaded.quantiles_ == fitted.quantiles_
    a = fitted.predict(split.test, progress=False)
    b = loaded.predict(split.test, progress=False)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6)


def test_without_a_teacher_file_fit_names_the_command_that_makes_one(split, tmp_path, monkeypatch):
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsNotFoundError, match="vadkit distill-teacher --backbone mobilenet_v2"):
        vadkit.create_model("efficientad", max_steps=2, **TINY).fit(split.train, progress=False)
    with pytest.raises(WeightsNotFoundError, match="teacher='missing.pth'"):
        vadkit.create_model("efficientad", teacher="missing.pth", max_steps=2, **TINY).fit(split.train,
                                                                                              progress=False)


def test_a_teacher_of_another_backbone_is_refused(teacher_file, split, tmp_path):
    teacher, metadata = load_teacher(teacher_file, padding=True)
    other = save_teacher(tmp_path / "other.pth", teacher, {**metadata, "backbone": "resnet18"})
    with pytest.raises(ParameterError, match="distilled from 'resnet18'"):
        vadkit.create_model("efficientad", teacher=str(other), max_steps=2, **TINY).fit(split.train, progress=False)
    with pytest.raises(ParameterError, match="distilled from mobilenet_v2 layers"):
        vadkit.create_model("efficientad", teacher=str(teacher_file), layers=["features.6"], max_steps=2,
                            **TINY).fit(split.train, progress=False)


@pytest.mark.parametrize("params, message", [
    ({"image_size": 32}, "image_size"), ({"lr": 0}, "lr"), ({"weight_decay": -1}, "weight_decay"),
    ({"padding": "yes"}, "padding"), ({"layers": ["features.99"]}, "unknown layer"), ({"max_steps": None}, "budget"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_parameters_are_refused_at_construction(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("efficientad", **params)


def test_distill_teacher_command_writes_a_teacher_efficientad_finds_in_the_cache(mvtec_folder, split, tmp_path,
                                                                               monkeypatch):
    from vadkit.cli import main
    from vadkit.models.pdn import default_teacher_path

    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["distill-teacher", "--images", str(mvtec_folder / "train"), "--steps", "2",
                                       "--lr", "1e-3", "--image-size", "64", "--batch-size", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    path = default_teacher_path("mobilenet_v2")
    assert str(path) in result.output and path.is_file()
    _, metadata = load_teacher(path)
    assert metadata["steps"] == 2 and metadata["image_size"] == 64 and metadata["n_images"] == 12
    assert metadata["lr"] == 1e-3
    model = vadkit.create_model("efficientad", max_steps=1, **TINY).fit(split.train, progress=False)
    assert model.backbone_weights_["sha256"] == metadata["sha256"]
    missing = CliRunner().invoke(main, ["distill-teacher", "--images", str(tmp_path / "nowhere"), "--steps", "1"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_distill_teacher_pools_repeated_image_sources(mvtec_folder, tmp_path):
    from vadkit.cli import main

    out = tmp_path / "teacher.pt"
    result = CliRunner().invoke(main, ["distill-teacher", "--images", str(mvtec_folder / "train"),
                                       "--images", str(mvtec_folder / "test"), "--steps", "1", "--image-size", "64",
                                       "--batch-size", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    _, metadata = load_teacher(out)
    n_test = len([p for p in (mvtec_folder / "test").rglob("*.png")])
    assert metadata["n_images"] == 12 + n_test
    assert metadata["images"] == f"{(mvtec_folder / 'train').resolve()} + {(mvtec_folder / 'test').resolve()}"
    assert len(image_source_paths(metadata["images"])) == metadata["n_images"]  # EfficientAD's penalty reads it


def test_distillation_stops_at_max_time_and_records_the_steps_taken(mvtec_folder):
    paths = image_source_paths(mvtec_folder / "train")
    _, metadata = distill_teacher(paths, steps=10_000, max_time=1e-9, image_size=64, batch_size=2, progress=False)
    assert metadata["steps"] == 0 and metadata["max_steps"] == 10_000 and metadata["max_time"] == 1e-9
    _, metadata = distill_teacher(paths, steps=2, max_time=3600, image_size=64, batch_size=2, progress=False)
    assert metadata["steps"] == 2


def test_a_map_with_equal_quantiles_is_not_divided_by_zero():
    from vadkit.models.efficientad import normalisation_quantiles, quantile_normalise

    values = torch.linspace(0, 1, 1001)
    q_a, q_b, degenerate = normalisation_quantiles(values)
    assert (q_a, q_b, degenerate) == (pytest.approx(0.9), pytest.approx(0.995), False)
    saturated = torch.cat([torch.linspace(0, 1, 80), torch.ones(20)])  # the top fifth holds one value
    q_a, q_b, degenerate = normalisation_quantiles(saturated)
    assert degenerate and q_a == 1.0 and q_b == pytest.approx(1.0 + float(saturated.std()))
    q_a, q_b, degenerate = normalisation_quantiles(torch.full((4, 8, 8), 0.25))
    assert degenerate and q_a == 0.25 and q_b == 1.25
    normalised = quantile_normalise(torch.full((1, 8, 8), 0.25), q_a, q_b)
    assert torch.isfinite(normalised).all() and float(normalised.abs().max()) == 0.0


def test_a_training_step_after_fit_reopens_the_penalty_images(fitted, split):
    images = torch.stack([ImageDataset(split.train[:2], fitted.transform)[i]["image"] for i in range(2)])
    assert fitted._penalty is None  # released after training
    assert torch.isfinite(fitted.training_step(images))
