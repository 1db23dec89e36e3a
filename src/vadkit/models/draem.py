"""DRAEM: a reconstruction network and a segmentation network trained together on simulated defects.

Zavrtanik, Kristan, Skocaj. "DRAEM - A discriminatively trained reconstruction embedding for surface anomaly
detection", ICCV 2021. https://arxiv.org/abs/2108.07610 (authors' code: github.com/VitjanZ/DRAEM,
``model_unet.py``, ``loss.py``, ``train_DRAEM.py``, ``test_DRAEM.py``; anomalib: ``anomalib/models/image/draem``)

As the paper and the authors' code define it:

* no pretrained backbone: both networks are trained from scratch (convolutions initialised N(0, 0.02),
  BatchNorm weights N(1, 0.02) and biases 0, the authors' ``weights_init``); images are RGB in [0, 1], resized
  to 256 x 256, not normalised;
* simulated anomalies (:class:`vadkit.data.synthetic.PerlinAnomaly`): a Perlin-noise mask, a DTD texture
  through 3 of 10 augmenters blended in with ``beta ~ U(0, 0.8)``, half of the images left normal;
* reconstructive sub-network: an encoder-decoder without skip connections, base width 128: four stages of two
  3x3 conv-BN-ReLU with max-pooling (widths w, 2w, 4w, 8w) and a fifth at 8w (stride 16), a decoder of four
  bilinear x2 upsamplings each followed by conv-BN-ReLU and two conv-BN-ReLU, and a last 3x3 convolution to 3
  channels (no output activation). It learns to give back the *normal* image from the defective one;
* discriminative sub-network: a U-Net of base width 64 (six encoder stages w..8w, five max-poolings, stride 32;
  five decoder stages with skip connections) on the concatenation (reconstruction, input), 6 channels, to 2
  logits per pixel (normal, anomalous);
* loss: ``L2(rec, I) + L_SSIM(rec, I) + L_focal(softmax(D), M)`` with weights 1, 1, 1 (``train_DRAEM.py``):
  L2 the mean squared error; ``L_SSIM = 1 - mean SSIM`` with an 11 x 11 Gaussian window (sigma 1.5), zero
  padding, C1 = 0.01^2, C2 = 0.03^2 (:func:`ssim_loss`); the focal loss with gamma 2 on the softmax
  probabilities, targets smoothed to [1e-5, 1 - 1e-5] and 1e-5 added to p_t (the authors' ``FocalLoss``,
  :func:`focal_loss`), averaged over pixels and images;
* anomaly map: the softmax probability of the anomalous channel; image score: the maximum of that map
  averaged over 21 x 21 windows (``avg_pool2d(21, stride 1, padding 10)``, borders counted as zeros, as
  ``test_DRAEM.py``) (:func:`image_score`);
* training: Adam, learning rate 1e-4 for both networks, batch 8, 700 epochs, the learning rate multiplied by
  0.2 at 80% and 90% of training; the last weights are kept.

Deviations, stated:

* widths: the paper's are ``base_width=128, disc_base_width=64``: 97.4 M parameters and 198 GMACs per
  256 x 256 image (counted with torch's FLOP counter), an hour or more per epoch of a few hundred images on a
  2-core CPU. The defaults here are 8 times narrower (``base_width=16, disc_base_width=8``: 1.5 M parameters,
  3.2 GMACs per image, about 60 times fewer); pass the paper's two widths to get its networks. A training
  step (batch 8, 256 x 256, forward and backward) then costs about 3 x 8 x 3.2 = 77 GMACs, and the default
  100 steps about 8 TMACs: the same order as STFPM's default budget;
* budget: ``epochs=700`` is the paper's; the default stops at ``max_steps`` (see the class docstring). The
  learning-rate drops happen at 80% and 90% of the steps the budget fixes (the authors' are per epoch,
  at 80% and 90% of the epochs: the same fractions); with a time budget alone there is no drop;
* the anomaly source: without ``texture_dir`` (DTD cannot be downloaded here) the textures are Perlin noise
  (see :mod:`vadkit.data.synthetic`, where every deviation of the generator is listed, including that the
  authors' random rotation of normal training images is not done); pass a DTD folder as ``texture_dir`` for
  the paper's source. The anomalies are drawn per batch inside ``training_step`` from a numpy generator seeded
  by torch's global RNG, which the shared loop seeds and checkpoints: a seed reproduces a training, and a
  resumed training draws the anomalies the uninterrupted one would;
* SSIM's dynamic range: the authors pick it from the reconstruction's values (1 unless it exceeds 128 or
  dips below -0.5, then 255 or 2); here it is 1, the range of the [0, 1] images (the same while the
  reconstruction stays in range);
* validation: when ``fit`` gets validation images, their loss is computed with the same simulated anomalies at
  every validation (a fixed seed) so that validations compare, and the best weights are kept (the shared
  loop's rule; the authors keep the last weights, which is what happens without validation images);
* images are RGB (the authors read BGR with OpenCV: networks trained from scratch do not care) and resized
  with antialiasing (:class:`~vadkit.data.Transform`; the authors: OpenCV bilinear without);
* anomalib differs from the authors in places (SSIM loss weight 2, its blend factor ``beta`` in (0.1, 1.0)
  weighting the texture, ``MultiStepLR`` at epochs 400 and 600 with gamma 0.1, the image score the raw map
  maximum); the authors' choices are followed here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size, parse_size
from vadkit.models.backbone_model import check_input_geometry
from vadkit.data import Transform
from vadkit.errors import ParameterError
from vadkit.models.trained import TrainedModel, check_number

#: side of the averaging window of the image score (``test_DRAEM.py``)
SCORE_WINDOW = 21
#: the focal loss's smoothing (the authors' ``FocalLoss(smooth=1e-5)``)
FOCAL_SMOOTH = 1e-5


# -- losses and scores (the formulas the tests check) -------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) normalised Gaussian window, the outer product of the 1-D one (SSIM's window)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0) -> torch.Tensor:
    """(B, C, H, W) structural similarity of ``a`` and ``b`` per channel and pixel: Gaussian-weighted means,
    variances and covariance over a ``window_size`` window with zero padding, C1 = (0.01 L)^2, C2 = (0.03 L)^2."""
    channels = a.shape[1]
    window = gaussian_window(window_size, sigma).to(a)[None, None].expand(channels, 1, -1, -1)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=window_size // 2, groups=channels)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def ssim_loss(reconstruction: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """DRAEM's SSIM loss: ``1 - mean(ssim_map)`` over images, channels and pixels."""
    return 1.0 - ssim_map(reconstruction, target, window_size).mean()


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0,
               smooth: float = FOCAL_SMOOTH) -> torch.Tensor:
    """DRAEM's focal loss of 2-class logits (B, 2, H, W) against a 0/1 mask (B, 1, H, W) or (B, H, W).

    ``p = softmax(logits)``; the one-hot target is clamped to ``[smooth, 1 - smooth]``; ``p_t = sum(target *
    p) + smooth``; loss ``-(1 - p_t)^gamma log p_t`` averaged over pixels and images (the authors' code)."""
    probabilities = torch.softmax(logits, dim=1)
    mask = mask.reshape(probabilities.shape[0], *probabilities.shape[2:])
    target = torch.stack([1 - mask, mask], dim=1).clamp(smooth, 1.0 - smooth)
    p_t = (target * probabilities).sum(1) + smooth
    return (-(1 - p_t) ** gamma * torch.log(p_t)).mean()


def image_score(anomaly_map: torch.Tensor, window: int = SCORE_WINDOW) -> torch.Tensor:
    """(B,) image scores: the maximum of the (B, H, W) map averaged over ``window`` x ``window`` squares
    (stride 1, zero padding counted in the mean, as ``avg_pool2d``'s default)."""
    pooled = F.avg_pool2d(anomaly_map[:, None], window, stride=1, padding=window // 2)
    return pooled.flatten(1).amax(1)


# -- the networks -------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _double(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU (``cin -> mid -> cout``)."""
    mid = cout if mid is None else mid
    return nn.Sequential(*_conv_bn_relu(cin, mid), *_conv_bn_relu(mid, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Bilinear x2 upsampling (corners aligned, as the authors) then one conv-BN-ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv_bn_relu(cin, cout))


class ReconstructiveNetwork(nn.Module):
    """DRAEM's reconstructive sub-network: an encoder-decoder without skips (stride 16), 3 -> 3 channels."""

    def __init__(self, base_width: int = 128, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        w = base_width
        self.encoder = nn.ModuleList([_double(in_channels, w), _double(w, 2 * w), _double(2 * w, 4 * w),
                                      _double(4 * w, 8 * w), _double(8 * w, 8 * w)])
        self.decoder = nn.ModuleList([
            nn.Sequential(_up(8 * w, 8 * w), _double(8 * w, 4 * w, mid=8 * w)),
            nn.Sequential(_up(4 * w, 4 * w), _double(4 * w, 2 * w, mid=4 * w)),
            nn.Sequential(_up(2 * w, 2 * w), _double(2 * w, w, mid=2 * w)),
            nn.Sequential(_up(w, w), _double(w, w)),
        ])
        self.head = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, stage in enumerate(self.encoder):
            x = stage(x if index == 0 else F.max_pool2d(x, 2))
        for stage in self.decoder:
            x = stage(x)
        return self.head(x)


class DiscriminativeNetwork(nn.Module):
    """DRAEM's discriminative sub-network: a U-Net (six encoder stages, stride 32, skip connections),
    6 -> 2 channels (logits of normal and anomalous)."""

    def __init__(self, base_width: int = 64, in_channels: int = 6, out_channels: int = 2) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList([_double(cin, cout) for cin, cout in zip([in_channels] + widths[:-1], widths)])
        # decoder stage k: upsample the deeper output to the skip's width, concatenate the skip, two convs
        self.ups = nn.ModuleList([_up(8 * w, 8 * w), _up(8 * w, 4 * w), _up(4 * w, 2 * w), _up(2 * w, w), _up(w, w)])
        self.blocks = nn.ModuleList([_double(16 * w, 8 * w), _double(12 * w, 4 * w), _double(6 * w, 2 * w),
                                     _double(3 * w, w), _double(2 * w, w)])
        self.head = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, stage in enumerate(self.encoder):
            x = stage(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def init_weights(module: nn.Module) -> None:
    """The authors' ``weights_init``: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DRAEM(TrainedModel):
    """DRAEM (Zavrtanik et al., ICCV 2021). See the module docstring for the method and its deviations.

    Args:
        image_size: side of the (square) input, or ``(height, width)`` / ``"HxW"``; multiples of 32 (the
            U-Net's stride).
        resize: how an image meets that size (``stretch``, ``fit``, ``fit_pad``, ``short_side``; see
            :class:`~vadkit.data.Transform`).
        base_width: width of the reconstructive sub-network (the paper's 128; default 16).
        disc_base_width: width of the discriminative sub-network (the paper's 64; default 8).
        texture_dir: folder of anomaly source images (the paper's DTD), or None for Perlin-noise textures.
        lr: Adam's learning rate (the paper's 1e-4), multiplied by 0.2 at 80% and 90% of the steps.
        epochs, max_steps, max_time: the training budget (the first reached stops training). Default:
            ``max_steps=100`` (about 8 TMACs of training at the default widths); the paper's is
            ``epochs=700, max_steps=None`` with ``base_width=128, disc_base_width=64``.
        batch_size: training batch (the paper's 8).
        seed: initial weights, shuffling and the simulated anomalies.
        validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "draem"
    learned: ClassVar[tuple[str, ...]] = ("reconstructive_", "discriminative_")

    def __init__(self, *, image_size: Size = 256, resize: str = "stretch", base_width: int = 16, disc_base_width: int = 8,
                 texture_dir: str | None = None, lr: float = 1e-4, epochs: int | None = None,
                 max_steps: int | None = 100, max_time: float | None = None, batch_size: int = 8, seed: int = 0,
                 validate_every: int | None = None, patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers)
        check_input_geometry(image_size, None, resize)
        if any(side % 32 for side in parse_size(image_size)):
            raise ParameterError(f"image_size must be a multiple of 32 (DRAEM's U-Net halves it five times), "
                                 f"or a (height, width) pair of them, got {image_size!r}")
        for name, value in (("base_width", base_width), ("disc_base_width", disc_base_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        check_number("lr", lr)
        if texture_dir is not None and not isinstance(texture_dir, (str, Path)):
            raise ParameterError(f"texture_dir must be a folder path or None, got {texture_dir!r}")
        self.image_size = list(image_size) if isinstance(image_size, tuple) else image_size
        self.resize = resize
        self.base_width, self.disc_base_width = base_width, disc_base_width
        self.texture_dir = str(texture_dir) if texture_dir is not None else None
        self.lr = lr
        self.reconstructive_: ReconstructiveNetwork | None = None
        self.discriminative_: DiscriminativeNetwork | None = None
        self._anomalies = None

    @property
    def transform(self) -> Transform:
        """Resize to ``image_size``; pixels in [0, 1], not normalised (what the authors feed)."""
        size = tuple(self.image_size) if isinstance(self.image_size, list) else self.image_size
        return Transform(image_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize=self.resize)

    def anomaly_generator(self):
        """The simulated-anomaly generator (built once; checks ``texture_dir`` when training starts, so a
        model file trained with a texture folder still loads where that folder does not exist)."""
        if self._anomalies is None:
            from vadkit.data.synthetic import PerlinAnomaly

            try:
                self._anomalies = PerlinAnomaly(self.texture_dir)
            except ValueError as error:
                raise ParameterError(str(error)) from None
        return self._anomalies

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        self.reconstructive_ = ReconstructiveNetwork(self.base_width)
        self.discriminative_ = DiscriminativeNetwork(self.disc_base_width)
        self.reconstructive_.apply(init_weights)
        self.discriminative_.apply(init_weights)

    def before_training(self, dataset) -> None:
        self.anomaly_generator()  # a bad texture_dir fails before the first step

    def loss(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """DRAEM's loss on ``images`` (B, 3, H, W) in [0, 1] with anomalies drawn from ``seed``."""
        from vadkit.data.synthetic import synthesize_batch

        augmented, masks = synthesize_batch(images, self.anomaly_generator(), seed)
        reconstruction = self.reconstructive_(augmented)
        logits = self.discriminative_(torch.cat([reconstruction, augmented], dim=1))
        return F.mse_loss(reconstruction, images) + ssim_loss(reconstruction, images) + focal_loss(logits, masks)

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        # the anomalies' seed comes from torch's global RNG, which the loop seeds and checkpoints
        return self.loss(images, int(torch.randint(0, 2 ** 62, (1,))))

    def validation_loss(self, images: torch.Tensor) -> torch.Tensor:
        # the same anomalies at every validation, so that validation losses compare
        return self.loss(images, self.seed + 1)

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.Adam(list(self.trainable_parameters()), lr=self.lr)
        if total_steps is None:
            return optimizer, None
        milestones = sorted({max(1, math.floor(0.8 * total_steps)), max(1, math.floor(0.9 * total_steps))})
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.2)

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> DRAEMGraph:
        self._check_fitted("inference_module")
        return DRAEMGraph(self.reconstructive_, self.discriminative_)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class DRAEMGraph(nn.Module):
    """DRAEM's inference (also what ``DRAEM.predict`` runs): reconstruction, segmentation of (reconstruction,
    image), the anomalous channel's softmax as the map, the 21 x 21-averaged map's maximum as the score.
    ``forward(images in [0, 1]) -> (scores (B,), maps (B, H, W))``."""

    def __init__(self, reconstructive: nn.Module, discriminative: nn.Module) -> None:
        super().__init__()
        self.reconstructive, self.discriminative = reconstructive, discriminative

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.reconstructive(images)
        logits = self.discriminative(torch.cat([reconstruction, images], dim=1))
        maps = torch.softmax(logits, dim=1)[:, 1]
        return image_score(maps), maps
