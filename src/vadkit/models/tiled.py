"""Tiling as a wrapper: any registered method run on overlapping tiles of a large image.

    model = vadkit.create_model("tiled", method="patchcore", method_params={"backbone": "mobilenet_v2"},
                                image_size=1024, tile=256, overlap=0.25)

The whole image is resized to ``image_size`` (any shape and ``resize`` mode, as every method), cut into
``tile``-sized tiles that overlap by ``overlap`` (:mod:`vadkit.ops.tiling`), and the wrapped method learns and
scores tiles as if they were images. The tiles' maps are stitched (window-weighted mean) into one map of the
whole image, and the image score is that map's maximum: the image is as anomalous as its worst pixel, wherever
the tile seams fall.

Two ways to learn, as in the tiled-ensemble paper (Rolih et al., "Divide and Conquer: High-Resolution Industrial
Anomaly Detection via Memory Efficient Tiled Ensemble", CVPR 2024 VAND workshop, the scheme anomalib ships):

- ``ensemble=False`` (default): one model learns every tile of every training image. Parts look alike across
  positions on most products, and one model sees T times more data per fit.
- ``ensemble=True``: one model per tile position, each fitted only on that position's tiles (a memory bank of
  one region, a teacher-student for one region): position-specific normality, T models to store.

Memory is bounded by the tiles, not by the image: the wrapped method sees ``tile_batch`` tiles at a time, so a
4000 x 3000 image costs its own pixels and its map, plus one tile batch of features.

What is not supported, and why: transductive and zero-shot methods (MuSc scores images against each other; its
tiles would score tiles of other positions) are refused. Training data for a trained method is cut on the fly,
one decoded image serving its consecutive tiles: shuffled training decodes an image once per tile it yields.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import torch
from torch import nn

from vadkit.data import Transform
from vadkit.data.transforms import Size, parse_size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import check_input_geometry
from vadkit.models.base import AnomalyModel
from vadkit.ops.tiling import TileStitcher, split_tiles, stitch_tiles, tile_positions, tile_window

#: decoded whole images a tile dataset keeps, so consecutive tiles of one image decode it once
_DECODED_IMAGES = 4


class TileDataset(torch.utils.data.Dataset):
    """The tiles of a dataset's images (whole images at the wrapper's canvas size) at the given positions, as
    images for the wrapped method: item ``i`` is tile ``i % T`` of image ``i // T``."""

    def __init__(self, images, positions: list[tuple[int, int]], tile: tuple[int, int], transform: Transform):
        self.images, self.positions, self.tile, self._transform = images, positions, tile, transform
        self._decoded: OrderedDict[int, dict] = OrderedDict()

    @property
    def transform(self) -> Transform:
        return self._transform

    def with_transform(self, transform: Transform):
        if transform != self._transform:
            raise ParameterError(f"tiles are cut at {self.tile}; they cannot be re-transformed to {transform}")
        return self

    def __len__(self) -> int:
        return len(self.images) * len(self.positions)

    def _image(self, index: int) -> dict:
        if index not in self._decoded:
            self._decoded[index] = self.images[index]
            if len(self._decoded) > _DECODED_IMAGES:
                self._decoded.popitem(last=False)
        return self._decoded[index]

    def __getitem__(self, index: int) -> dict:
        image_index, position = divmod(int(index), len(self.positions))
        item = self._image(image_index)
        (top, left), (height, width) = self.positions[position], self.tile
        return {"image": item["image"][:, top:top + height, left:left + width].contiguous(),
                "label": item["label"], "index": int(index), "path": item["path"],
                "defect_type": item["defect_type"], "original_size": torch.tensor([height, width])}


class TiledGraph(nn.Module):
    """The inference graph: split, the wrapped method's graph per tile (one shared, or one per position), stitch,
    maximum. ``images`` (B, 3, H, W) -> ``(scores (B,), maps (B, H, W))``."""

    def __init__(self, graphs: list[nn.Module], positions, tile, size, window: torch.Tensor):
        super().__init__()
        self.graphs = nn.ModuleList(graphs)
        self.positions, self.tile, self.size = positions, tile, size
        self.register_buffer("window", window)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crops = [images[:, :, top:top + self.tile[0], left:left + self.tile[1]] for top, left in self.positions]
        if len(self.graphs) == 1:
            # every tile in one call, stacked position-major along the batch: one copy of the wrapped graph in an
            # export, and the batch dimension stays free (a (T, B, ...) view of the result undoes the stacking)
            maps = self.graphs[0](torch.cat(crops))[1]
            maps = maps.view(len(self.positions), -1, *maps.shape[-2:]).transpose(0, 1)
        else:
            maps = torch.stack([graph(crop)[1] for graph, crop in zip(self.graphs, crops)], dim=1)
        stitched = stitch_tiles(maps.float(), self.positions, self.size, self.window)
        return stitched.flatten(1).amax(dim=1), stitched


class TiledModel(AnomalyModel):
    """Any method on overlapping tiles (module docstring).

    Args:
        method: the registered method run per tile (not a transductive or zero-shot one).
        method_params: that method's parameters (its ``image_size`` is the tile's and is set here).
        image_size: the whole image's size before tiling: a side, ``(H, W)`` or ``"HxW"`` (default 512).
        resize: how an image meets ``image_size`` (``stretch``, ``fit``, ``fit_pad``, ``short_side``).
        tile: the tile's size, a side or ``(H, W)`` (default 256, the methods' own default input).
        overlap: the fraction of a tile shared with its neighbour, in [0, 1) (default 0.25).
        ensemble: one model per tile position (True) or one for all tiles (False, default).
        tile_batch: tiles per forward pass of the wrapped method (bounds memory; default 16).
    """

    name = "tiled"
    default_batch_size = 1  # one image is already many tiles
    learned: ClassVar[tuple[str, ...]] = ("models_",)

    def __init__(self, *, method: str = "patchcore", method_params: dict[str, Any] | None = None,
                 image_size: Size = 512, resize: str = "stretch", tile: Size = 256, overlap: float = 0.25,
                 ensemble: bool = False, tile_batch: int = 16) -> None:
        super().__init__()
        from vadkit.models.registry import create_model, list_models, model_class

        if method not in list_models() or method == self.name:
            raise ParameterError(f"method must be one of {', '.join(m for m in list_models() if m != self.name)}, "
                                 f"got {method!r}")
        if method_params is not None and not isinstance(method_params, dict):
            raise ParameterError(f"method_params must be a dict of {method}'s parameters, got {method_params!r}")
        if "image_size" in (method_params or {}):
            raise ParameterError("method_params must not set image_size: the tiles' size is the `tile` parameter "
                                 "and the whole image's is `image_size`")
        cls = model_class(method)
        if cls.transductive or not cls.requires_fit:
            raise ParameterError(f"{method} scores images against each other or needs no training: it cannot be "
                                 "tiled (its tiles would score tiles of other positions)")
        check_input_geometry(image_size, None, resize)
        try:
            tile_hw = parse_size(tile, "tile")
        except ValueError as error:
            raise ParameterError(str(error)) from None
        canvas = parse_size(image_size)
        if tile_hw[0] > canvas[0] or tile_hw[1] > canvas[1]:
            raise ParameterError(f"tile {tile!r} is larger than image_size {image_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise ParameterError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
        if not isinstance(ensemble, bool):
            raise ParameterError(f"ensemble must be True or False, got {ensemble!r}")
        if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
            raise ParameterError(f"tile_batch must be an integer >= 1, got {tile_batch!r}")
        self.method, self.method_params = method, dict(method_params) if method_params else None
        self.image_size, self.resize, self.tile, self.overlap = image_size, resize, tile, overlap
        self.ensemble, self.tile_batch = ensemble, tile_batch
        # validates method_params now (a typo fails here, not after the first tile); also the template of every fit
        self._template = create_model(method, image_size=tile_hw, **(self.method_params or {}))
        self.backbone = getattr(self._template, "backbone", None)
        #: the fitted per-tile models: one, or one per position (row by row)
        self.models_: list[AnomalyModel] | None = None

    # -- geometry ------------------------------------------------------------------------------------
    @property
    def tile_size(self) -> tuple[int, int]:
        return parse_size(self.tile, "tile")

    @property
    def positions(self) -> list[tuple[int, int]]:
        return tile_positions(self.transform.output_size, self.tile_size, self.overlap)

    @property
    def transform(self) -> Transform:
        inner = self._template.transform
        return Transform(image_size=self.image_size, mean=inner.mean, std=inner.std, resize=self.resize)

    def _new_model(self) -> AnomalyModel:
        from vadkit.models.registry import create_model

        return create_model(self.method, image_size=self.tile_size, **(self.method_params or {})).to(self.device)

    # -- fit -----------------------------------------------------------------------------------------
    def fit(self, data, *, val=None, batch_size: int | None = None, progress: bool | None = None) -> TiledModel:
        dataset, val = self._begin_fit(data, val)
        self.input_size_ = list(self.transform.output_size)
        positions = self.positions
        groups = [[p] for p in positions] if self.ensemble else [positions]
        models = []
        for group in groups:
            model = self._new_model()
            model.fit(self._tiles(dataset, group, model), val=None if val is None else self._tiles(val, group, model),
                      batch_size=batch_size, progress=progress)
            models.append(model)
        self.models_ = models
        self.fitted = True
        return self

    def _tiles(self, images, positions, model: AnomalyModel):
        if isinstance(images, torch.Tensor):
            self._check_input_size(images)
            return split_tiles(images, positions, self.tile_size).flatten(0, 1)
        return TileDataset(images, positions, self.tile_size, model.transform)

    # -- predict -------------------------------------------------------------------------------------
    def inference_module(self) -> nn.Module:
        self._check_fitted("export")
        return TiledGraph([model.inference_module() for model in self.models_], self.positions, self.tile_size,
                          tuple(self.transform.output_size), tile_window(self.tile_size, self.overlap))

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles are cut, scored and stitched ``tile_batch`` at a time (all images' tiles of a few positions per
        call): memory is the images, their maps and one tile batch, whatever the number of tiles."""
        positions, (height, width) = self.positions, self.tile_size
        stitcher = TileStitcher(images.shape[0], tuple(images.shape[-2:]), tile_window(self.tile_size, self.overlap),
                                device=images.device)
        per_call = max(1, self.tile_batch // images.shape[0])
        for first in range(0, len(positions), per_call):
            group = positions[first:first + per_call]
            if len(self.models_) == 1:
                crops = torch.cat([images[:, :, top:top + height, left:left + width] for top, left in group])
                maps = self.models_[0]._predict_batch(crops)[1].view(len(group), images.shape[0], height, width)
            else:
                maps = torch.stack([self.models_[first + i]._predict_batch(
                    images[:, :, top:top + height, left:left + width])[1] for i, (top, left) in enumerate(group)])
            for position, position_maps in zip(group, maps):
                stitcher.add(position_maps, position)
        stitched = stitcher.result()
        return stitched.flatten(1).amax(dim=1), stitched

    # -- device, persistence, profiling --------------------------------------------------------------
    def _move_to(self, device: torch.device) -> None:
        for model in self.models_ or ():
            model.to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"input_size_": self.input_size_, "models_": [model.state_dict() for model in self.models_]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.input_size_ = state["input_size_"]
        models = []
        for model_state in state["models_"]:
            model = self._new_model()
            model.load_state_dict(model_state)
            model.fitted = True
            models.append(model)
        self.models_ = models

    @property
    def extractor(self):
        return self.models_[0].extractor if self.models_ else self._template.extractor

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        per_tile = len(self.positions) if len(self.models_ or ()) == 1 else 1
        totals: dict[str, int] = {}
        for model in self.models_ or ():
            for key, value in model.analytic_macs(n_images * per_tile).items():
                totals[key] = totals.get(key, 0) + value
        return totals


def tiled_params(method: str, params: dict[str, Any], *, tile: Size, overlap: float = 0.25,
                 ensemble: bool = False) -> dict[str, Any]:
    """The ``tiled`` wrapper's parameters for ``method`` with ``params`` as a user gives them to the method (the
    CLI's ``--param``, a bench entry's ``params``): ``image_size`` and ``resize`` describe the whole image and go to
    the wrapper, everything else is the method's."""
    params = dict(params)
    wrapper = {key: params.pop(key) for key in ("image_size", "resize") if key in params}
    return {"method": method, "method_params": params or None, "tile": tile, "overlap": overlap,
            "ensemble": ensemble, **wrapper}
