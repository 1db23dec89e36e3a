"""EfficientAD-S: a small student and an autoencoder learn a distilled teacher's features on normal images.

Batzner, Heckler, König. "EfficientAD: Accurate Visual Anomaly Detection at Millisecond-Level Latencies",
WACV 2024. https://arxiv.org/abs/2303.14535 (appendix: Tables 5 and 7, Algorithm 1). Checked against
anomalib's ``models/image/efficient_ad`` (torch_model.py, lightning_model.py).

As the paper defines it:

* teacher T: a PDN-S (:mod:`vadkit.models.pdn`, 384 output channels), distilled beforehand from a pretrained
  network's features and frozen; its outputs are normalised by their per-channel mean and standard deviation
  over the training images, computed before training;
* student S: a PDN-S with 768 output channels: the first 384 regress the teacher, the last 384 the
  autoencoder;
* autoencoder A (Table 7): six strided convolutions (32, 32, 64, 64, 64 kernels 4x4 stride 2 padding 1, then
  64 8x8 to a 1x1 code), ReLU between them; the decoder alternates bilinear resizing (to 3, 8, 15, 32, 63 and
  127 at 256 x 256 input, then to the student's output size) with 4x4 convolutions (padding 2, ReLU, dropout
  0.2) and ends with a 3x3 ReLU and a 3x3 384-kernel convolution;
* student loss: the hard-feature loss, the mean of the squared student-teacher differences D_{c,w,h} that
  reach the 0.999-quantile of D (:func:`hard_feature_loss`), plus a penalty, the mean of the student's
  squared (first 384) outputs on a pretraining image (ImageNet in the paper; resized to 2x, grayscale with
  probability 0.3, centre crop);
* autoencoder and student-vs-autoencoder losses on the same training image augmented by one of brightness,
  contrast or saturation with a factor from U(0.8, 1.2): the mean squared difference between A and the
  (normalised) teacher, and between A and the student's last 384 channels; the four losses are summed;
* maps: M_ST the channel mean of (T - S[:384])^2, M_AE the channel mean of (A - S[384:])^2; each normalised
  as 0.1 (M - q_a) / (q_b - q_a) with q_a, q_b the 0.9 and 0.995 quantiles of its values on validation
  images after training (:func:`quantile_normalise`), averaged, upsampled bilinearly to the input size.
  Image score: the map's maximum. The unpadded PDN's maps miss a 4-position border (56 instead of 64 at
  256): as in anomalib, both maps are padded there with distance 0 before the normalisation (padding the
  normalised map with 0 instead, as the authors' reproduction does, would put the border at q_a, above most
  of a normal image, and make it every normal image's score);
* training: Adam, learning rate 1e-4, weight decay 1e-5, batch size 1, 70,000 steps, learning rate times 0.1
  after 95% of the steps; 256 x 256 images.

Deviations, stated:

* the teacher: the paper distils WideResNet-101 features on ImageNet for 60,000 steps; neither is available
  offline here, so the teacher is distilled by ``vadkit distill-teacher`` from an offline backbone
  (MobileNetV2 by default) on any folder of images or the ELPV cells, for a CPU budget of steps (see
  :mod:`vadkit.models.pdn`); the teacher's weights travel inside the model file (it is the model's backbone).
  Its cost, measured: 18.6 s per step of 16 images on 2 CPU cores (99 steps in 30 minutes, loss 0.81 -> 0.75),
  so the paper's 60,000 steps would take about 13 days here; a teacher of a few hundred steps is far from the
  paper's, and EfficientAD's accuracy here measures that teacher (BENCHMARKS.md, issue 13);
* the penalty images: the paper's ImageNet is replaced by the teacher's distillation images (its file records
  their source), or ``penalty_images=<folder or elpv>``;
* the map quantiles are computed on the validation images given to ``fit(val=...)``, or on the training
  images when there are none (the paper holds out validation images);
* image sizes other than 256: the encoder's last convolution covers its whole remaining map (size / 32; the
  paper's 8 at 256) and the decoder's resizing sizes scale with the input (at least 1);
* the budget: the paper's 70,000 steps take days on a 2-core CPU; the default stops at ``max_steps`` (class
  docstring); ``max_steps=70000`` is the paper's; the validation loss (hard-feature + autoencoder losses
  without penalty or augmentation) picks the best weights when ``fit(val=...)`` is given.
"""

from __future__ import annotations

import warnings

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size, parse_size
from vadkit.models.backbone_model import check_input_geometry
from vadkit.data import Transform
from vadkit.errors import ParameterError, WeightsNotFoundError
from vadkit.models.pdn import (DISTILL_COMMAND, IMAGENET_MEAN, IMAGENET_STD, TEACHER_CHANNELS, SmallPDN,
                               channel_statistics, default_teacher_path, load_teacher, pdn_output_size)
from vadkit.models.trained import TrainedModel, check_number

#: the hard-feature loss keeps the differences at or above this quantile (the paper's p_hard)
HARD_QUANTILE = 0.999
#: map normalisation: these quantiles of the validation maps go to 0 and 0.1
QUANTILE_A, QUANTILE_B = 0.9, 0.995
#: the penalty images are turned grayscale with this probability (anomalib / the authors' reproduction)
PENALTY_GRAYSCALE = 0.3
#: the autoencoder's augmentation factor range
AUGMENT_RANGE = (0.8, 1.2)
#: the unpadded PDN's output misses 4 positions on each side (256 -> 56 instead of 64)
MAP_PADDING = 4


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of all elements, linear interpolation (numpy's default), without torch.quantile's
    2^24-element limit."""
    flat = values.flatten().sort().values
    position = q * (flat.numel() - 1)
    low = int(position)
    high = min(low + 1, flat.numel() - 1)
    return flat[low] + (position - low) * (flat[high] - flat[low])


def hard_feature_loss(distance: torch.Tensor, q: float = HARD_QUANTILE) -> torch.Tensor:
    """The mean of the elements of ``distance`` (squared differences, any shape) at or above their ``q``
    quantile."""
    threshold = quantile(distance.detach(), q)
    return distance[distance >= threshold].mean()


def normalisation_quantiles(values: torch.Tensor) -> tuple[float, float, bool]:
    """``(q_a, q_b, degenerate)``: the map normalisation's quantiles of ``values``. After a very short training a
    map can hold one value over the top tenth of the normal images' positions (measured on battery_weld at 100
    steps: the ST map's 0.9 and 0.995 quantiles were the same number), and the normalisation would divide by
    zero: ``degenerate`` is then True and q_b = q_a + the values' standard deviation (+ 1 for a constant map),
    so the map keeps its variation at a finite scale."""
    q_a, q_b = float(quantile(values, QUANTILE_A)), float(quantile(values, QUANTILE_B))
    if q_b > q_a:
        return q_a, q_b, False
    spread = float(values.float().std()) if values.numel() > 1 else 0.0
    return q_a, q_a + (spread if spread > 0 else 1.0), True


def quantile_normalise(maps: torch.Tensor, q_a: torch.Tensor | float, q_b: torch.Tensor | float) -> torch.Tensor:
    """0.1 (M - q_a) / (q_b - q_a): q_a goes to 0, q_b to 0.1."""
    return 0.1 * (maps - q_a) / (q_b - q_a)


class Encoder(nn.Module):
    """EncConv-1..6 (Table 7); the last kernel covers the remaining map (8 x 8 at 256 x 256 input)."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        super().__init__()
        widths = (32, 32, 64, 64, 64)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, kernel_size=4, stride=2, padding=1)
                                   for i, o in zip((3, *widths[:-1]), widths))
        # per axis, so a rectangular input keeps a 1 x 1 code (the paper's square 256 gives 8 x 8)
        self.code = nn.Conv2d(64, 64, kernel_size=tuple(max(1, side // 32) for side in image_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.code(x)


def decoder_sizes(image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The bilinear resizing targets ``(h, w)`` of the decoder's six blocks (3, 8, 15, 32, 63, 127 at 256),
    per axis."""
    fractions = ((64, -1), (32, 0), (16, -1), (8, 0), (4, -1), (2, -1))
    return [tuple(max(1, side // d + offset) for side in image_size) for d, offset in fractions]


class Decoder(nn.Module):
    """DecConv-1..8 (Table 7): resize, 4 x 4 convolution (padding 2), ReLU, dropout 0.2, six times; resize to
    the student's output size; 3 x 3 ReLU; 3 x 3 to 384 channels."""

    def __init__(self, image_size: tuple[int, int], output_size: tuple[int, int],
                 channels: int = TEACHER_CHANNELS) -> None:
        super().__init__()
        self.sizes, self.output_size = decoder_sizes(image_size), output_size
        self.convs = nn.ModuleList(nn.Conv2d(64, 64, kernel_size=4, padding=2) for _ in self.sizes)
        self.dropout = nn.Dropout(0.2)
        self.conv7 = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.conv8 = nn.Conv2d(64, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size, conv in zip(self.sizes, self.convs):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = self.dropout(F.relu(conv(x)))
        x = F.interpolate(x, size=self.output_size, mode="bilinear", align_corners=False)
        return self.conv8(F.relu(self.conv7(x)))


class AutoEncoder(nn.Module):
    """EfficientAD's autoencoder: ImageNet-normalised images -> 384 channels at the student's output size."""

    def __init__(self, image_size: tuple[int, int], output_size: tuple[int, int]) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(image_size), Decoder(image_size, output_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def st_ae_maps(teacher: torch.Tensor, student: torch.Tensor, autoencoder: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M_ST, M_AE), each (B, h, w): channel means of (T - S[:384])^2 and (A - S[384:])^2."""
    channels = teacher.shape[1]
    return ((teacher - student[:, :channels]).pow(2).mean(1),
            (autoencoder - student[:, channels:]).pow(2).mean(1))


def _augment(images01: torch.Tensor) -> torch.Tensor:
    """One of brightness, contrast, saturation, with a factor from U(0.8, 1.2) (torch's global generator,
    which checkpoints save: a resumed training draws the same)."""
    from torchvision.transforms import functional as TF

    choice = int(torch.randint(3, ()))
    factor = float(torch.empty(()).uniform_(*AUGMENT_RANGE))
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)[choice]
    return adjust(images01, factor)


class EfficientAD(TrainedModel):
    """EfficientAD-S (Batzner et al., WACV 2024). See the module docstring for the method and its deviations.

    Args:
        teacher: a teacher file made by ``vadkit distill-teacher``; None: the one cached for ``backbone``
            (``$VADKIT_HOME/weights/efficientad_teacher_<backbone>.pth``, where ``distill-teacher`` writes by
            default).
        backbone: the network the teacher was distilled from (picks the cached teacher; a teacher file from
            another backbone is refused).
        layers: the backbone layers the teacher must have been distilled from (None: those its file records,
            kept in ``layers_``).
        penalty_images: the penalty's pretraining images, a folder or ``"elpv"``; None: the teacher's own
            distillation images (recorded in its file).
        image_size: input side in pixels (the paper's 256), or ``(H, W)`` / ``"HxW"``; each side >= 64.
        resize: how an image meets that size (``stretch``, ``fit``, ``fit_pad``, ``short_side``; see
            :class:`~vadkit.data.Transform`).
        padding: pad the PDN's convolutions (anomalib's option; default off, as the paper's training).
        lr, weight_decay: Adam, the paper's 1e-4 and 1e-5; the learning rate drops x0.1 after 95% of the steps
            when the step or epoch budget fixes their number.
        epochs, max_steps, max_time: the training budget. Default ``max_steps=100`` (about ten minutes on a
            2-core CPU at 256 x 256); the paper's is ``max_steps=70000``.
        batch_size: training batch (the paper's 1).
        seed, validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "efficientad"
    default_batch_size = 4
    learned: ClassVar[tuple[str, ...]] = ("teacher_", "student_", "autoencoder_", "teacher_mean_", "teacher_std_",
                                          "quantiles_", "backbone_weights_", "layers_")

    def __init__(self, *, teacher: str | None = None, backbone: str = "mobilenet_v2",
                 layers: list[str] | None = None, penalty_images: str | None = None, image_size: Size = 256, resize: str = "stretch",
                 padding: bool = False,
                 lr: float = 1e-4, weight_decay: float = 1e-5, epochs: int | None = None,
                 max_steps: int | None = 100, max_time: float | None = None, batch_size: int = 1, seed: int = 0,
                 validate_every: int | None = None, patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers)
        check_input_geometry(image_size, None, resize)
        if min(parse_size(image_size)) < 64:
            raise ParameterError(f"image_size must be at least 64 pixels a side, got {image_size!r}")
        check_number("lr", lr)
        check_number("weight_decay", weight_decay, positive=False)
        if not isinstance(padding, bool):
            raise ParameterError(f"padding must be True or False, got {padding!r}")
        for name, value in (("teacher", teacher), ("penalty_images", penalty_images), ("backbone", backbone)):
            if value is not None and not isinstance(value, (str, Path)):
                raise ParameterError(f"{name} must be a path or name, got {value!r}")
        self.teacher = str(teacher) if teacher is not None else None
        self.backbone = backbone
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        if self.layers is not None:
            from vadkit.backbones import get_spec

            try:
                valid = get_spec(backbone).layers
            except ValueError as error:
                raise ParameterError(str(error)) from None
            unknown = [layer for layer in self.layers if layer not in valid]
            if unknown:
                raise ParameterError(f"unknown layer(s) {unknown} for backbone {backbone!r}; valid: {', '.join(valid)}")
        self.penalty_images = str(penalty_images) if penalty_images is not None else None
        self.image_size, self.padding, self.lr, self.weight_decay = image_size, padding, lr, weight_decay
        self.resize = resize
        self.teacher_: SmallPDN | None = None
        self.student_: SmallPDN | None = None
        self.autoencoder_: AutoEncoder | None = None
        self.teacher_mean_: torch.Tensor | None = None
        self.teacher_std_: torch.Tensor | None = None
        #: {"st_a", "st_b", "ae_a", "ae_b"}: the map quantiles, and what they were computed on
        self.quantiles_: dict[str, Any] | None = None
        #: the teacher: {"source": its file, "sha256": its weights, and its distillation metadata}
        self.backbone_weights_: dict[str, Any] | None = None
        #: the backbone layers the teacher was distilled from (its file's record)
        self.layers_: list[str] | None = None
        self._teacher_state: dict[str, torch.Tensor] | None = None
        self._penalty = None

    @property
    def transform(self) -> Transform:
        return Transform(image_size=self.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=self.resize)

    def teacher_path(self) -> Path:
        return Path(self.teacher).expanduser() if self.teacher is not None else default_teacher_path(self.backbone)

    # -- training -------------------------------------------------------------------------------------
    def _prepare_fit(self) -> None:
        """Read the teacher file before any image is seen: no teacher, no fit (with the command that makes one)."""
        path = self.teacher_path()
        if not path.is_file():
            where = f"teacher={self.teacher!r}" if self.teacher is not None else f"the cache ({path})"
            raise WeightsNotFoundError(
                f"EfficientAD needs a distilled teacher network, and none was found at {where}. Make one with `"
                f"{DISTILL_COMMAND.format(backbone=self.backbone)}` (it is cached for backbone={self.backbone!r}; "
                f"or add --out FILE and pass teacher=FILE)")
        teacher, metadata = load_teacher(path, padding=self.padding)
        if metadata.get("backbone") != self.backbone:
            raise ParameterError(f"the teacher {path} was distilled from {metadata.get('backbone')!r}, but "
                                 f"backbone={self.backbone!r}: pass backbone={metadata.get('backbone')!r}")
        if self.layers is not None and list(metadata.get("layers", ())) != self.layers:
            raise ParameterError(f"the teacher {path} was distilled from {self.backbone} layers "
                                 f"{metadata.get('layers')}, but layers={self.layers}: distil one from those layers "
                                 "or pass layers=None")
        self.layers_ = list(metadata.get("layers", ()))
        self._teacher_state = teacher.state_dict()
        self.backbone_weights_ = {"source": f"EfficientAD teacher {path}", **metadata}
        self.quantiles_ = None

    def build_networks(self) -> None:
        size = parse_size(self.image_size)
        output = tuple(pdn_output_size(side, self.padding) for side in size)
        self.teacher_ = SmallPDN(TEACHER_CHANNELS, self.padding)
        if self._teacher_state is not None:
            self.teacher_.load_state_dict(self._teacher_state)
        self.teacher_.requires_grad_(False)
        self.student_ = SmallPDN(2 * TEACHER_CHANNELS, self.padding)
        self.autoencoder_ = AutoEncoder(size, output)
        for network in (self.teacher_, self.student_, self.autoencoder_):
            network.to(memory_format=torch.channels_last)  # measured 2x faster on a 2-core CPU

    def train_mode(self, training: bool) -> None:
        super().train_mode(training)
        self.teacher_.eval()

    def _normalised_teacher(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.teacher_(images) - self.teacher_mean_) / self.teacher_std_

    def before_training(self, dataset) -> None:
        """The teacher's per-channel mean and standard deviation over the training images (in order), and
        the penalty images."""
        self.teacher_mean_, self.teacher_std_ = channel_statistics(
            self.teacher_(images.to(self.device)) for images in self._batches(dataset, self.default_batch_size))
        self.teacher_std_ = self.teacher_std_.clamp_min(1e-6)
        self._penalty = self._penalty_dataset()

    def _penalty_dataset(self):
        from vadkit.data import ImageDataset, Sample
        from vadkit.models.pdn import image_source_paths

        source = self.penalty_images or (self.backbone_weights_ or {}).get("images")
        if not source:
            raise ParameterError("the teacher file records no distillation images for the penalty: pass "
                                 "penalty_images=<folder of images, or elpv>")
        try:
            paths = image_source_paths(source)
        except Exception as error:
            raise ParameterError(f"the penalty images {source!r} cannot be read ({error}); pass "
                                 "penalty_images=<folder of images, or elpv>") from None
        # the paper's pretraining-image transform: resize to 2x, grayscale (p = 0.3, in training_step), centre crop
        size = parse_size(self.image_size)
        crop = Transform(image_size=(2 * size[0], 2 * size[1]), crop_size=size, mean=(0.0, 0.0, 0.0),
                         std=(1.0, 1.0, 1.0))
        return ImageDataset([Sample(path) for path in paths], crop, skip_bad_images=True)

    def _penalty_batch(self, n: int) -> torch.Tensor:
        from vadkit.models.pdn import imagenet_normalise, random_grayscale

        if self._penalty is None:  # a training step outside fit (after it, e.g. to time a step): open them again
            self._penalty = self._penalty_dataset()
        indices = torch.randint(len(self._penalty), (n,))  # the global generator: checkpointed, so resumable
        images = torch.stack([self._penalty[int(i)]["image"] for i in indices])
        return imagenet_normalise(random_grayscale(images, PENALTY_GRAYSCALE)).to(self.device)

    def _losses(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
        from vadkit.models.pdn import imagenet_normalise

        images = images.contiguous(memory_format=torch.channels_last)
        teacher = self._normalised_teacher(images)
        student = self.student_(images)
        loss = hard_feature_loss((teacher - student[:, :TEACHER_CHANNELS]).pow(2))
        if augment:
            mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
            images = imagenet_normalise(_augment(images * std + mean)).contiguous(memory_format=torch.channels_last)
            teacher = self._normalised_teacher(images)
            student = self.student_(images)
        autoencoder = self.autoencoder_(images)
        loss = loss + (teacher - autoencoder).pow(2).mean()
        return loss + (autoencoder - student[:, TEACHER_CHANNELS:]).pow(2).mean()

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        penalty = self.student_(self._penalty_batch(len(images)).contiguous(memory_format=torch.channels_last))
        return self._losses(images, augment=True) + penalty[:, :TEACHER_CHANNELS].pow(2).mean()

    def validation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Hard-feature, autoencoder and student-autoencoder losses, without penalty or augmentation
        (deterministic, so that the best weights are chosen on the networks, not on the draw)."""
        return self._losses(images, augment=False)

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.Adam(list(self.trainable_parameters()), lr=self.lr, weight_decay=self.weight_decay)
        if total_steps is None:
            return optimizer, None
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[max(1, int(0.95 * total_steps))],
                                                         gamma=0.1)
        return optimizer, scheduler

    def after_training(self, dataset, val) -> None:
        """q_a and q_b of each map over the validation images (the training images without them)."""
        source = val if val is not None else dataset
        graph = EfficientADGraph(self.teacher_, self.student_, self.autoencoder_, self.teacher_mean_,
                                 self.teacher_std_, None)
        st, ae = [], []
        for images in self._batches(source, self.default_batch_size):
            map_st, map_ae = graph.raw_maps(images.to(self.device))
            st.append(map_st.cpu())
            ae.append(map_ae.cpu())
        st, ae = torch.cat(st), torch.cat(ae)
        self.quantiles_ = {"images": "validation" if val is not None else "training", "n_images": len(st)}
        for name, values in (("st", st), ("ae", ae)):
            q_a, q_b, degenerate = normalisation_quantiles(values)
            if degenerate:
                warnings.warn(f"efficientad: the {name.upper()} map's 0.9 and 0.995 quantiles on the "
                              f"{self.quantiles_['images']} images are equal ({q_a:.3g}): it is scaled by its "
                              "standard deviation instead; train longer (max_steps), or check the teacher",
                              stacklevel=2)
            self.quantiles_[f"{name}_a"], self.quantiles_[f"{name}_b"] = q_a, q_b
        self._penalty = None

    # -- persistence and device ---------------------------------------------------------------------------
    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        for name in ("teacher_mean_", "teacher_std_"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.teacher_.requires_grad_(False)

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> EfficientADGraph:
        self._check_fitted("inference_module")
        return EfficientADGraph(self.teacher_, self.student_, self.autoencoder_, self.teacher_mean_,
                                self.teacher_std_, self.quantiles_)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)

    @property
    def extractor(self) -> nn.Module | None:
        """The teacher PDN: the pretrained network every prediction runs (the profiler's floor)."""
        return self.teacher_


class EfficientADGraph(nn.Module):
    """EfficientAD's inference (also what ``EfficientAD.predict`` runs): teacher, student and autoencoder on
    the same images, the two maps normalised by their quantiles, averaged, padded, upsampled; the maximum.
    ``forward(images) -> (scores (B,), maps (B, H, W))``."""

    def __init__(self, teacher: nn.Module, student: nn.Module, autoencoder: nn.Module, mean: torch.Tensor,
                 std: torch.Tensor, quantiles: dict[str, float] | None) -> None:
        super().__init__()
        self.teacher, self.student, self.autoencoder = teacher, student, autoencoder
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        q = quantiles or {"st_a": 0.0, "st_b": 10.0, "ae_a": 0.0, "ae_b": 10.0}  # identity before after_training
        self.register_buffer("q", torch.tensor([q["st_a"], q["st_b"], q["ae_a"], q["ae_b"]], dtype=torch.float32))

    def raw_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.contiguous(memory_format=torch.channels_last)
        teacher = (self.teacher(images) - self.mean) / self.std
        return st_ae_maps(teacher, self.student(images), self.autoencoder(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        map_st, map_ae = self.raw_maps(images)
        if map_st.shape[-1] * 4 < images.shape[-1]:  # the unpadded PDN: its missing border, as distance 0
            map_st, map_ae = F.pad(map_st, (MAP_PADDING,) * 4), F.pad(map_ae, (MAP_PADDING,) * 4)
        combined = 0.5 * quantile_normalise(map_st, self.q[0], self.q[1]) + \
            0.5 * quantile_normalise(map_ae, self.q[2], self.q[3])
        maps = F.interpolate(combined[:, None], size=tuple(images.shape[-2:]), mode="bilinear",
                             align_corners=False)[:, 0]
        return maps.flatten(1).amax(1), maps
