"""PaSTe: STFPM whose teacher and student share the frozen early layers (Partially Shared Teacher-sTudent).

Barusco, Borsatti, Dalle Pezze, Paissan, Farella, Susto. "PaSTe: Improving the Efficiency of Visual Anomaly
Detection at the Edge", 2024. https://arxiv.org/abs/2410.11591 (authors' code: the MoViAD library,
github.com/AMCO-UniPD/moviad, ``moviad/models/paste/stfpm.py`` and ``trainers/trainer_paste.py``)

The method: STFPM (:mod:`vadkit.models.stfpm`) spends most of its training and inference in the early,
high-resolution layers, which the student re-learns only to reproduce the teacher there. PaSTe shares them:
the teacher's frozen layers up to a *shared* layer run once, and the student is a fresh, randomly initialised
copy of the later layers only, fed by the teacher's output at the shared layer. Its loss, maps and image score
are STFPM's; so are the optimiser and its settings (SGD 0.4 / 0.9 / 1e-4 in the authors' trainer).

Layers, as the authors choose them for MobileNetV2 (PaSTe repository README, "Feature extraction layers grid
search"): STFPM taps ``features.3 / 8 / 14`` (their "Equiv" setting), PaSTe shifts the first tap deeper to
``features.7 / 10 / 14`` so that more can be shared. The shared prefix: the authors' code lets any layer up to
the first tapped one be shared (``student_bootstrap_layer``); the layer just before the first tap
(``features.6``, the end of the stride-8 stage) is the default here, the most that can be shared without the
student losing a tapped layer (which of the allowed values the paper's tables used we could not verify).

Claims against STFPM (paper abstract): -25% inference time, -33% training time, -76% peak training memory, at
similar pixel F1. BENCHMARKS.md measures them on this machine.

Deviations, stated:

* backbones other than MobileNetV2 (PaSTe was evaluated on MobileNetV2, PhiNet, MCUNet, MicroNet; not on
  ResNets): the default taps are the three stage ends after the first (ResNet ``layer2 / 3 / 4``), sharing
  the stage before them; the student must be a chain of the backbone's exposed layers, which is checked
  when the networks are built (torchvision MobileNetV2 and ResNets are);
* the authors' trainer leaves the first layer's features un-normalised in the loss (``trainer_paste.py``),
  unlike STFPM and unlike their own anomaly map; every layer is normalised here, as in STFPM;
* budget and validation as in :mod:`vadkit.models.stfpm`.
"""

from __future__ import annotations

from collections.abc import Sequence
import torch

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.stfpm import STFPM, product_map, pyramid_loss

#: PaSTe's MobileNetV2 taps (the authors' grid search); other backbones: see the module docstring
PASTE_LAYERS = {"mobilenet_v2": ("features.7", "features.10", "features.14")}


class LayerChain(torch.nn.Module):
    """Consecutive layers of a backbone run as a chain from an intermediate feature map, returning the
    outputs of the tapped ones: PaSTe's student (the layers after the shared prefix)."""

    def __init__(self, names: Sequence[str], modules: Sequence[torch.nn.Module], taps: Sequence[str]) -> None:
        super().__init__()
        self.names, self.taps = list(names), list(taps)
        self.stages = torch.nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, stage in zip(self.names, self.stages):
            x = stage(x)
            if name in self.taps:
                out[name] = x
        return {tap: out[tap] for tap in self.taps}


class PaSTe(STFPM):
    """PaSTe (Barusco et al., 2024). Takes every :class:`~vadkit.models.stfpm.STFPM` parameter, plus:

    Args:
        layers: the tapped layers (default MobileNetV2 ``features.7, .10, .14``, the authors'; see the module
            docstring for other backbones).
        shared_layer: the last layer teacher and student share (frozen); default: the layer just before the
            first tapped one. Must come before every tapped layer.
    """

    name = "paste"

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 shared_layer: str | None = None, weights: str | None = None, image_size: Size = 256,
                 crop_size: int | None = None, resize: str = "stretch", lr: float = 0.4, momentum: float = 0.9, weight_decay: float = 1e-4,
                 epochs: int | None = None, max_steps: int | None = 200, max_time: float | None = None,
                 batch_size: int = 32, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize, lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                         max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers)
        self.shared_layer = shared_layer
        self.shared_layer_()  # fail at construction on a shared layer that is unknown or not before the taps

    def default_layers(self) -> list[str]:
        if self.backbone in PASTE_LAYERS:
            return list(PASTE_LAYERS[self.backbone])
        from vadkit.backbones import get_spec

        stage_ends = list(get_spec(self.backbone).layers)
        pyramid = self.stride_4_8_16_layers()
        first = stage_ends.index(pyramid[0])
        return stage_ends[first + 1:first + 4] if len(stage_ends) >= first + 4 else pyramid

    def shared_layer_(self) -> str:
        """The shared layer: ``shared_layer``, or the exposed layer just before the first tapped one."""
        from vadkit.backbones import get_spec

        order = list(get_spec(self.backbone).layers)
        taps = self.chosen_layers()
        first = min(order.index(tap) for tap in taps)
        if self.shared_layer is None:
            if first == 0:
                raise ParameterError(f"PaSTe shares the layers before the first tapped one, but {taps[0]} is the "
                                     f"first layer of {self.backbone}: tap deeper layers")
            return order[first - 1]
        if self.shared_layer not in order:
            raise ParameterError(f"unknown shared_layer {self.shared_layer!r} for {self.backbone}; valid: "
                                 f"{', '.join(order[:first])}")
        if order.index(self.shared_layer) >= first:
            raise ParameterError(f"shared_layer {self.shared_layer!r} must come before every tapped layer "
                                 f"({', '.join(taps)}): the student needs a layer of its own for each tap")
        return self.shared_layer

    # -- networks -------------------------------------------------------------------------------------
    @property
    def extractor(self):
        """The teacher, tapped at the shared layer too (its output feeds the student)."""
        if self._extractor is None:
            from vadkit.backbones import create_extractor

            extractor = create_extractor(self.backbone, [self.shared_layer_(), *self.chosen_layers()],
                                         weights=self.weights)
            self._check_weights(extractor)
            self._extractor = extractor
        return self._extractor

    def build_networks(self) -> None:
        """The student: randomly initialised copies of the teacher's layers after the shared one, as a chain
        (checked: the teacher's own layers, chained the same way, give the teacher's features)."""
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        order = list(spec.layers)
        shared, taps = self.shared_layer_(), self.chosen_layers()
        names = order[order.index(shared) + 1:max(order.index(tap) for tap in taps) + 1]
        self._check_chain(spec, shared, names, taps)
        random_network = spec.build()
        self.student_ = LayerChain(names, [random_network.get_submodule(name) for name in names], taps)
        self.student_.to(memory_format=torch.channels_last)

    def _check_chain(self, spec, shared: str, names: list[str], taps: list[str]) -> None:
        if spec.library != "torchvision":
            raise ParameterError(f"PaSTe builds its student from consecutive layers of a torchvision backbone; "
                                 f"{self.backbone} is a {spec.library} model")
        from vadkit.backbones import create_extractor

        teacher = create_extractor(self.backbone, [shared, *taps], pretrained=False, fuse_batchnorm=False)
        network = spec.build()  # the architecture as published (a traced extractor no longer has its modules)
        missing = network.load_state_dict(teacher.body.state_dict(), strict=False).unexpected_keys
        if missing:
            raise ParameterError(f"{self.backbone}'s extractor and network disagree on {missing[:3]}")
        chain = LayerChain(names, [network.get_submodule(name) for name in names], taps).eval()
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            features = teacher(x)
            chained = chain(features[shared])
        if any(not torch.allclose(chained[tap], features[tap], rtol=1e-4, atol=1e-5) for tap in taps):
            raise ParameterError(f"the layers of {self.backbone} after {shared} are not a plain chain up to "
                                 f"{taps[-1]}: PaSTe cannot share its early layers; use STFPM")

    # -- training and prediction -----------------------------------------------------------------------
    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.extractor(images)
        shared = teacher.pop(self.shared_layer_())
        return pyramid_loss(teacher, self.student_(shared))

    def inference_module(self) -> PaSTeGraph:
        self._check_fitted("inference_module")
        return PaSTeGraph(self.extractor, self.student_, self.shared_layer_())


class PaSTeGraph(torch.nn.Module):
    """PaSTe's inference: the teacher once (shared layers included), the student from the shared layer's
    output, STFPM's product map and its maximum."""

    def __init__(self, teacher: torch.nn.Module, student: LayerChain, shared_layer: str) -> None:
        super().__init__()
        self.teacher, self.student, self.shared_layer = teacher, student, shared_layer

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = self.teacher(images)
        shared = teacher.pop(self.shared_layer)
        maps = product_map(teacher, self.student(shared), tuple(images.shape[-2:]))
        return maps.flatten(1).amax(1), maps
