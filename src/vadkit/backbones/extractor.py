"""Frozen, truncated feature extractors: ``FeatureExtractor("mobilenet_v2")(x) -> {layer: feature map}``.

The backbone forward pass is the physical floor of most VAD methods (docs/architecture.md, "Performance"), so
the extractor runs *only* the network up to the deepest requested layer, never the rest:

* torchvision backbones are traced with ``torchvision.models.feature_extraction.create_feature_extractor``
  (torch.fx); dead-code elimination drops every node (and its parameters) after the requested layers.
* vision transformers (DINOv2, DeiT, ...) run in :class:`~vadkit.backbones.vit.ViTFeatureNet`: the blocks up to
  the deepest tapped one, each tapped block's tokens reshaped to a patch grid (class and register tokens
  dropped; :meth:`FeatureExtractor.tokens` gives the whole sequences to the methods that need them);
* other timm backbones are wrapped in timm's ``FeatureGetterNet``, which calls the model's
  ``forward_intermediates`` after ``prune_intermediate_layers`` cut the blocks (and norm/head) after the
  deepest requested index; it also returns NCHW maps for transformers (ViT tokens reshaped, prefix tokens
  dropped; Swin NHWC permuted). Models without ``forward_intermediates`` fall back to timm's
  ``FeatureListNet``, which copies modules only up to the last requested one. (timm's own
  ``features_only=True`` is not used: for EfficientNets it builds ``EfficientNetFeatures``, which runs
  every block whatever ``out_indices`` says, and loads weights with ``strict=False``.)

Weights are loaded into the *full* architecture with ``strict=True`` before truncation, so a wrong file
fails loudly instead of leaving random layers. A frozen extractor (the default) is always in eval mode
(BatchNorm uses its ImageNet statistics even when a parent module is put in ``train()``, as a teacher network
must) and its parameters never require gradients, so no autograd graph is built unless the *input* requires
grad; call it under ``torch.inference_mode()`` for the fastest path. ``frozen=False`` gives the same
truncated architecture as a network to train (a student, :mod:`vadkit.models.stfpm`).

The convolutions of torchvision backbones then have their BatchNorms folded in (:func:`fold_batchnorm`):
the network is frozen, so each BatchNorm is a fixed per-channel affine map, and folding it halves the CPU
time of the forward pass, the floor of every method.

Memory format: see :meth:`FeatureExtractor.to_channels_last` and ``benchmarks/backbone_floor.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.fx
from torch import Tensor, nn

from vadkit.backbones.registry import BackboneSpec, get_spec
from vadkit.backbones.vit import ViTFeatureNet, is_vit
from vadkit.backbones.weights import resolve_weights
from vadkit.errors import WeightsNotFoundError

# Channels-last is the default because it was the fastest (or tied) for every backbone and batch size measured
# by benchmarks/backbone_floor.py (BENCHMARKS.md, "Backbone floor"), most of all for the depthwise-heavy
# MobileNetV2 (likely cause: fewer layout conversions around oneDNN convolutions).
DEFAULT_CHANNELS_LAST = True


class FeatureExtractor(nn.Module):
    """A pretrained backbone cut after its deepest requested layer; returns the requested feature maps.

    Args:
        backbone: a name from :func:`vadkit.backbones.list_backbones`, ``"timm:<model>"``, or a timm name.
        layers: layer names (see the backbone's :class:`BackboneSpec`); ``None`` = its ``default_layers``.
        weights: an explicit weights file (a state dict in the architecture's key names), loaded even when
            ``pretrained=False``; otherwise weights are resolved offline-first
            (:func:`vadkit.backbones.resolve_weights`).
        pretrained: ``False`` (and no ``weights``) keeps the random initialisation, for tests and training
            from scratch; ``weights_source`` then says so.
        channels_last: memory format of the network; ``None`` uses the measured-fastest default.
        fuse_batchnorm: fold BatchNorms into the convolutions before them (:func:`fold_batchnorm`); ``False``
            keeps the network as published (for comparisons).
        frozen: ``True`` (default): the pretrained feature extractor every method scores with: no gradients,
            always in eval mode, BatchNorms folded. ``False``: the same truncated architecture as a network to
            train (a student): gradients on, ``train()`` honoured, BatchNorms kept.

    Attributes:
        name, layers, channels, strides, mean, std, spec, weights_source (where the weights came from) and
        weights_sha256 (:func:`state_dict_sha256` of the whole network as loaded, before truncation).

    Call with ``x`` of shape ``(B, 3, H, W)``, float, already normalised with ``mean``/``std``. Returns
    ``{layer: (B, channels[layer], ~H / strides[layer], ~W / strides[layer])}`` in the order of ``layers``
    (exactly ``H / stride`` when ``H`` is a multiple of the stride, for the built-in backbones).

    Raises:
        ValueError: unknown backbone or layer (the message lists the valid names).
        WeightsNotFoundError: no pretrained weights found, or they do not fit the architecture.
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str] | None = None,
        weights: str | Path | None = None,
        pretrained: bool = True,
        *,
        channels_last: bool | None = None,
        fuse_batchnorm: bool = True,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        spec = get_spec(backbone)
        self.spec = spec
        self.name = spec.name
        self.layers = _check_layers(spec, layers)
        self.channels = {layer: spec.channels[layer] for layer in self.layers}
        self.strides = {layer: spec.layers[layer] for layer in self.layers}
        self.mean, self.std = spec.mean, spec.std
        model = _architecture(spec, loading=weights is not None or pretrained)
        self.weights_source = _load_weights(model, spec, weights, pretrained)
        self.weights_sha256 = state_dict_sha256(model.state_dict())
        self.frozen = frozen
        self.body = _truncate(model, spec, self.layers)
        if fuse_batchnorm and frozen:
            self.body = fold_batchnorm(self.body)
        self._depth_order = tuple(layer for layer in spec.layers if layer in self.layers)
        self.body.requires_grad_(not frozen)
        self.memory_format = torch.contiguous_format
        #: a vision transformer: every layer is a block's patch grid, and :meth:`tokens` is available
        self.is_vit = isinstance(self.body, ViTFeatureNet)
        # channels-last speeds up convolutions; a ViT has one (the patch embedding), and its tokens are not NCHW
        if (DEFAULT_CHANNELS_LAST and not self.is_vit) if channels_last is None else channels_last:
            self.to_channels_last()
        self.train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        out = self._run(x.contiguous(memory_format=self.memory_format))
        return {layer: out[layer] for layer in self.layers}

    @property
    def patch_size(self) -> int | None:
        """A ViT's patch size (its input sides must be multiples of it); None for a CNN."""
        return self.body.patch_size if self.is_vit else None

    @property
    def num_prefix_tokens(self) -> int:
        """Class + register tokens at the start of :meth:`tokens`' sequences (0 for a CNN)."""
        return self.body.num_prefix_tokens if self.is_vit else 0

    def tokens(self, x: Tensor, norm: bool = False) -> dict[str, Tensor]:
        """A ViT's whole token sequences ``{layer: (B, prefix + h * w, C)}`` (class and register tokens first,
        :attr:`num_prefix_tokens` of them), for the methods that use more than the patch grids; ``norm``: each
        through the final LayerNorm."""
        if not self.is_vit:
            raise ValueError(f"{self.name} is not a vision transformer: it has feature maps, not tokens")
        return self.body.tokens(x.contiguous(), norm=norm)

    def to_channels_last(self) -> FeatureExtractor:
        """Run the network in channels-last (NHWC) memory format; inputs are converted on the fly.

        Outputs are channels-last tensors too: use ``.reshape``, not ``.view``, on them (or
        ``.contiguous()``).
        """
        self.body.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    def to_contiguous_format(self) -> FeatureExtractor:
        """Back to the default NCHW memory format."""
        self.body.to(memory_format=torch.contiguous_format)
        self.memory_format = torch.contiguous_format
        return self

    def train(self, mode: bool = True) -> FeatureExtractor:
        """A frozen extractor always stays in eval mode: it must keep its BatchNorm statistics."""
        return super().train(mode and not self.frozen)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, layers={self.layers}, weights_source={self.weights_source!r}"

    def _run(self, x: Tensor) -> dict[str, Tensor]:
        out = self.body(x)
        if isinstance(out, dict):  # torchvision fx extractor
            return out
        return dict(zip(self._depth_order, out))  # timm: a list in depth order


def create_extractor(
    backbone: str,
    layers: Sequence[str] | None = None,
    weights: str | Path | None = None,
    pretrained: bool = True,
    **kwargs,
) -> FeatureExtractor:
    """Factory for :class:`FeatureExtractor` (same arguments)."""
    return FeatureExtractor(backbone, layers, weights=weights, pretrained=pretrained, **kwargs)


def _check_layers(spec: BackboneSpec, layers: Sequence[str] | None) -> tuple[str, ...]:
    if layers is None:
        return tuple(spec.default_layers)
    if isinstance(layers, str):
        layers = (layers,)
    chosen = tuple(dict.fromkeys(layers))  # drop duplicates, keep order
    unknown = [layer for layer in chosen if layer not in spec.layers]
    if unknown or not chosen:
        valid = ", ".join(f"{n} (stride {s})" for n, s in spec.layers.items())
        raise ValueError(f"unknown layer(s) {unknown or list(layers)} for backbone {spec.name!r}; valid: {valid}")
    return chosen


def _architecture(spec: BackboneSpec, loading: bool) -> nn.Module:
    """The full architecture. When weights will be loaded into it, its tensors are allocated without the random
    initialisation every one of them would be overwritten by (a second of a ViT-S's construction), provided that
    every buffer is one a state dict sets (a buffer it does not hold would be left uninitialised)."""
    if not loading:
        return spec.build()
    model = spec.build(meta=True)
    if {name for name, _ in model.named_buffers()} - set(model.state_dict()):
        return spec.build()
    return model.to_empty(device="cpu")


def _load_weights(model: nn.Module, spec: BackboneSpec, weights: str | Path | None, pretrained: bool) -> str:
    if weights is None and not pretrained:
        return "random init (pretrained=False)"
    state, source = resolve_weights(spec.name, weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        if not _load_published_checkpoint(model, spec, state):
            raise WeightsNotFoundError(
                f"weights from {source} do not fit {spec.library} {spec.arch}: {str(err)[:800]}"
            ) from err
    return source


def _load_published_checkpoint(model: nn.Module, spec: BackboneSpec, state: dict[str, Tensor]) -> bool:
    """Load a checkpoint as its authors published it into a timm model, through timm's own conversion of that
    architecture's checkpoints (e.g. the official DINOv2 file, ``dinov2_vits14_pretrain.pth``, which carries a mask
    token timm's model has not). True when that made it fit exactly (``strict=True``)."""
    if spec.library != "timm":
        return False
    import importlib

    convert = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return False
    try:
        model.load_state_dict(convert(dict(state), model), strict=True)
    except (RuntimeError, KeyError, ValueError):
        return False
    return True


def state_dict_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 of a network's tensors (dtypes, shapes and values, in order; not their names): the same weights
    give the same digest whichever file or package they were read from."""
    digest = hashlib.sha256()
    for tensor in state.values():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fold_batchnorm(body: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution into the convolution's weights (a frozen network's
    BatchNorm is a fixed affine map per channel): the same features to float rounding (measured 1e-6
    relative on mobilenet_v2) in about half the time on a CPU, where an unfused BatchNorm is a separate pass
    over every feature map (BENCHMARKS.md, "Backbone floor"). Applies to torch.fx graphs (the torchvision
    backbones); other bodies are returned as they are."""
    if not isinstance(body, torch.fx.GraphModule):
        return body
    from torch.fx.experimental.optimization import fuse

    return fuse(body.eval(), inplace=True)


def _truncate(model: nn.Module, spec: BackboneSpec, layers: tuple[str, ...]) -> nn.Module:
    if is_vit(model):
        return ViTFeatureNet(model, layers)
    if spec.library == "torchvision":
        from torchvision.models.feature_extraction import create_feature_extractor

        return create_feature_extractor(model, return_nodes={layer: layer for layer in layers})
    return timm_feature_net(model, layers)


def timm_feature_net(model: nn.Module, layers: Sequence[str], prefer_getter: bool = True) -> nn.Module:
    """Wrap a timm model so that it returns the given ``feature_info`` modules (a list, depth order).

    Uses ``FeatureGetterNet`` (pruned ``forward_intermediates``) when the model has it, else
    ``FeatureListNet``. Both drop everything after the deepest requested module.
    """
    from timm.models._features import FeatureGetterNet, FeatureListNet

    modules = [info["module"] for info in model.feature_info]
    indices = sorted(modules.index(layer) for layer in layers)
    if prefer_getter and hasattr(model, "forward_intermediates"):
        return FeatureGetterNet(model, out_indices=indices, output_fmt="NCHW", prune=True)
    return FeatureListNet(model, out_indices=indices)
