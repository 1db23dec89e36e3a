"""SADSeM: segmentation-guided anomaly detection, one memory bank per part of the object.

Samele, Attorre, Matteucci. "Scaling anomaly detection with segmentation models", Digital Signal Processing 168,
105613 (2025). https://doi.org/10.1016/j.dsp.2025.105613

A segmentation model splits each image into the sub-classes of its object (cap, body, label), and anomalies are
scored part by part: a patch is compared only with normal patches of its own part, and the shape of each part's
mask with the normal shapes of that part. Because the segmenter works at any resolution and each part's bank holds
only that part's features, the paper reports that it holds its accuracy as images grow (MVTec LOCO at 1024 px)
where fixed-crop methods lose more than 10 points. As implemented here:

* segmenter (``segmenter``): ``"maskrcnn"``, a Mask R-CNN fine-tuned on ``parts`` (a folder of ~10 annotated
  normal images, :mod:`vadkit.segmentation.parts`; sub-classes tagged global/local and merged in that order), or
  ``"otsu"``, the documented fallback for data without part annotations: Otsu's brightness threshold and
  morphology, a two-part partition (dark, bright) (:mod:`vadkit.segmentation`). Part 0 is what no part claims;
* per-part memory banks: each training patch belongs to the part covering most of it; each part is assigned one
  of the candidate ``layers`` by area and normalised within-cluster spread (WSS): among the layers whose grid
  gives the part at least ``min_patches`` patches per image on average (small parts need a fine grid), the one
  where the part's features are most compact (the least within-part sum of squares relative to all patches'),
  then PatchCore's locally aware features of that layer, greedy k-center coreset (``coreset_ratio``);
* feature anomaly: the distance of each patch to the nearest feature of its part's bank;
* mask anomaly: each part's mask (at the stride-8 grid) against the stored training masks of that part: the
  nearest one M* by mean L1 distance d, the map |m - M*| * d minus the part's stored rescaling factor r, clipped
  at 0. r is the largest value that map takes on the training masks themselves (each against its nearest *other*
  training mask), so normal shape variation maps to 0;
* per-part min-max normalisation: feature distances by the min and max of the training patches' distances to
  their part's bank, mask maps by r; the image's pixel map is the maximum of the feature map (each pixel scored
  by its own part) and every part's mask map, smoothed (Gaussian, ``sigma``); the image score is its maximum.

Not stated in the paper text available to us (only the abstract was; the pipeline follows the issue that asked
for it): the exact layer-assignment thresholds, the rescaling factor's definition, the min/max statistics, and the
backbone (here any vadkit backbone, MobileNetV2 by default). The Mask R-CNN is built on an offline MobileNetV2-FPN
with a frozen backbone instead of the paper's COCO ResNet-50 (no COCO weights offline). A Mask R-CNN model does not
export to ONNX (torchvision's detection graph is data-dependent); the Otsu one does, as one graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.ops.coreset import greedy_kcenter, random_projection, start_index
from vadkit.ops.knn import nearest_rows
from vadkit.ops.patch_features import local_average
from vadkit.ops.smoothing import to_image_maps

SEGMENTERS = ("otsu", "maskrcnn")
#: the side of the grid part masks are compared on, relative to the input (stride 8)
MASK_STRIDE = 8
#: projection width of the coreset selection (PatchCore's)
PROJECTION_DIM = 128
#: bank rows and queries per block of the exact search: (queries x rows) float32 distances, 32 MB at a time
SEARCH_ROWS, SEARCH_QUERIES = 1024, 8192


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (n,) of each query (n, d) to its nearest ``bank`` row, in bounded blocks."""
    distances = []
    for first in range(0, len(queries), SEARCH_QUERIES):
        block = queries[first:first + SEARCH_QUERIES]
        nearest = bank[nearest_rows(block, bank, 1, chunk=SEARCH_ROWS)[:, 0]]
        distances.append((block - nearest).norm(dim=1))
    return torch.cat(distances)


def part_fractions(partition: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """How much of each cell of ``grid`` each part covers: (B, K, H, W) one-hot -> (B, K, h, w)."""
    return F.adaptive_avg_pool2d(partition, grid)


def mask_anomaly(masks: torch.Tensor, stored: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The mask anomaly of each of ``masks`` (B, h, w) against ``stored`` (N, h, w) training masks of one part:
    |m - M*| * d(m, M*) - scale, clipped at 0, with M* the stored mask nearest in mean L1 distance d."""
    distances = (masks.flatten(1)[:, None, :] - stored.flatten(1)[None, :, :]).abs().mean(dim=2)   # (B, N)
    nearest, index = distances.min(dim=1)
    return ((masks - stored[index]).abs() * nearest[:, None, None] - scale).clamp_min(0.0)


class SADSeMGraph(torch.nn.Module):
    """The whole inference: partition, features, per-part banks and masks -> ``(scores (B,), maps (B, H, W))``."""

    def __init__(self, model: SADSeM) -> None:
        super().__init__()
        self.extractor, self.segmenter = model.extractor, model.part_segmenter()
        self.layers, self.patch_size, self.sigma = list(model.part_layers_), model.patch_size, model.sigma
        self.present = [bank is not None for bank in model.banks_]
        for name, values in (("bank", model.banks_), ("masks", model.mask_bank_)):
            for part, value in enumerate(values):
                self.register_buffer(f"{name}_{part}", value.float() if value is not None else torch.zeros(0))
        self.register_buffer("mask_scale", torch.tensor(model.mask_scale_, dtype=torch.float32))
        self.register_buffer("feature_range", torch.tensor(model.feature_range_, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(images.shape[-2:])
        partition = self.segmenter(images)
        features = self.extractor(images)
        feature_map = images.new_zeros((images.shape[0], *size))
        mask_grid = (size[0] // MASK_STRIDE, size[1] // MASK_STRIDE)
        mask_fractions = part_fractions(partition, mask_grid)
        mask_map = images.new_zeros((images.shape[0], *mask_grid))
        for part, layer in enumerate(self.layers):
            if not self.present[part]:
                continue
            embedding = local_average(features[layer], self.patch_size)                   # (B, C, h, w)
            batch, channels, height, width = embedding.shape
            patches = embedding.permute(0, 2, 3, 1).reshape(-1, channels)
            # one block of queries (a loop over them would fix the batch size in an export), banks in blocks
            bank = getattr(self, f"bank_{part}")
            nearest = bank[nearest_rows(patches, bank, 1, chunk=SEARCH_ROWS)[:, 0]]
            distances = (patches - nearest).norm(dim=1).view(batch, height, width)
            low, high = self.feature_range[part, 0], self.feature_range[part, 1]
            normalised = ((distances - low) / (high - low).clamp_min(1e-12)).clamp_min(0.0)
            pixel_scores = F.interpolate(normalised[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            feature_map = feature_map + partition[:, part] * pixel_scores                  # each pixel: its part
            anomaly = mask_anomaly(mask_fractions[:, part], getattr(self, f"masks_{part}"), self.mask_scale[part])
            mask_map = torch.maximum(mask_map, anomaly / self.mask_scale[part].clamp_min(1e-6))
        mask_map = F.interpolate(mask_map[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        combined = torch.maximum(feature_map, mask_map)
        maps = to_image_maps(combined, size, self.sigma) if self.sigma else combined
        return maps.flatten(1).amax(dim=1), maps


class SADSeM(BackboneModel):
    """Segmentation-guided anomaly detection (module docstring).

    Args:
        backbone, layers, weights, image_size, crop_size, resize: the frozen feature extractor; ``layers`` are
            the candidate layers a part is assigned one of (default: the backbone's stride-8 and stride-16 pair).
        segmenter: ``"otsu"`` (no annotation) or ``"maskrcnn"`` (needs ``parts``).
        parts: the annotation folder of the Mask R-CNN (:mod:`vadkit.segmentation.parts`).
        segmenter_steps, segmenter_time: the Mask R-CNN fine-tuning budget (steps, and seconds or None).
        coreset_ratio: the fraction of each part's training patches its bank keeps (PatchCore's 0.1).
        min_patches: the fewest patches per image a part must get on a layer's grid for that layer to be chosen.
        patch_size: PatchCore's neighbourhood averaging (3).
        sigma: Gaussian smoothing of the map in pixels (4, as PatchCore).
        seed: the segmenter's fine-tuning draws.
    """

    name = "sadsem"
    default_batch_size = 8
    learned: ClassVar[tuple[str, ...]] = ("part_names_", "part_layers_", "banks_", "mask_bank_", "mask_scale_",
                                          "feature_range_", "segmenter_state_", "segmenter_info_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: Size | None = None,
                 resize: str = "stretch", segmenter: str = "otsu", parts: str | None = None,
                 segmenter_steps: int = 200, segmenter_time: float | None = None, coreset_ratio: float = 0.1,
                 min_patches: int = 16, patch_size: int = 3, sigma: float = 4.0, seed: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        if segmenter not in SEGMENTERS:
            raise ParameterError(f"segmenter must be one of {', '.join(SEGMENTERS)}, got {segmenter!r}")
        if segmenter == "maskrcnn" and parts is None:
            raise ParameterError("segmenter='maskrcnn' needs parts=<folder of annotated normal images> (see "
                                 "vadkit.segmentation.parts); without annotations use segmenter='otsu'")
        if not (isinstance(coreset_ratio, (int, float)) and 0 < coreset_ratio <= 1):
            raise ParameterError(f"coreset_ratio must be in (0, 1], got {coreset_ratio!r}")
        for name, value in (("segmenter_steps", segmenter_steps), ("min_patches", min_patches),
                            ("patch_size", patch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be an integer >= 1, got {value!r}")
        check_sigma(sigma)
        self.segmenter = segmenter
        self.parts = str(parts) if parts is not None else None
        self.segmenter_steps, self.segmenter_time = segmenter_steps, segmenter_time
        self.coreset_ratio, self.min_patches, self.patch_size, self.sigma = coreset_ratio, min_patches, patch_size, sigma
        self.seed = seed
        self.part_names_: list[str] | None = None
        self.part_layers_: list[str] | None = None
        self.banks_: list[torch.Tensor | None] | None = None
        self.mask_bank_: list[torch.Tensor] | None = None
        self.mask_scale_: list[float] | None = None
        self.feature_range_: list[list[float]] | None = None
        self.segmenter_state_: dict[str, torch.Tensor] | None = None
        self.segmenter_info_: dict[str, Any] | None = None
        self._segmenter = self._graph = None

    # -- the segmenter -------------------------------------------------------------------------------
    def part_segmenter(self) -> torch.nn.Module:
        """The part segmenter (built on first use; a Mask R-CNN from the fitted state)."""
        if self._segmenter is None:
            if self.segmenter == "otsu":
                from vadkit.segmentation import OtsuPartition

                self._segmenter = OtsuPartition()
            else:
                from vadkit.segmentation.maskrcnn import PartMaskRCNN

                if self.segmenter_state_ is None:
                    raise VadkitError("the Mask R-CNN segmenter is fitted by fit(): call fit() first")
                segmenter = PartMaskRCNN(tuple(self.part_names_[1:]), tuple(self.transform.output_size),
                                         weights=self.weights if self.backbone == "mobilenet_v2" else None)
                segmenter.load_trainable_state(self.segmenter_state_)
                self._segmenter = segmenter.eval().to(self.device)
        return self._segmenter

    def _fit_segmenter(self, progress: bool | None) -> None:
        self._segmenter = self._graph = None
        if self.segmenter == "otsu":
            from vadkit.segmentation.otsu import PART_NAMES

            self.part_names_, self.segmenter_state_ = list(PART_NAMES), None
            self.segmenter_info_ = {"segmenter": "otsu"}
            return
        from vadkit.segmentation import read_part_annotations
        from vadkit.segmentation.maskrcnn import fine_tune

        annotations = read_part_annotations(self.parts)
        segmenter, info = fine_tune(annotations, self.transform, steps=self.segmenter_steps, seed=self.seed,
                                    max_time=self.segmenter_time, progress=progress,
                                    weights=self.weights if self.backbone == "mobilenet_v2" else None)
        self.part_names_ = list(segmenter.part_names)
        self.segmenter_state_ = {k: v.detach().cpu() for k, v in segmenter.trainable_state().items()}
        self.segmenter_info_ = {"segmenter": "maskrcnn", "annotated_images": len(annotations.images),
                                "steps": info["steps"], "seconds": info["seconds"],
                                "first_loss": info["losses"][0], "last_loss": info["losses"][-1]}
        self._segmenter = segmenter.to(self.device)

    # -- fit -----------------------------------------------------------------------------------------
    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        self._fit_segmenter(progress)
        layers = self.chosen_layers()
        features: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        owners: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        masks: list[torch.Tensor] = []
        with torch.inference_mode():
            for images in batches:
                partition = self.part_segmenter()(images)
                maps = self.features(images)
                for name in layers:
                    embedding = local_average(maps[name], self.patch_size)
                    owners[name].append(part_fractions(partition, embedding.shape[-2:]).argmax(dim=1).flatten().cpu())
                    features[name].append(embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]).half().cpu())
                size = images.shape[-2:]
                masks.append(part_fractions(partition, (size[0] // MASK_STRIDE, size[1] // MASK_STRIDE)).half().cpu())
        features = {name: torch.cat(rows) for name, rows in features.items()}
        owners = {name: torch.cat(rows) for name, rows in owners.items()}
        masks = torch.cat(masks)                                                         # (N, K, h, w)
        self.part_layers_, self.banks_, self.feature_range_ = [], [], []
        for part in range(len(self.part_names_)):
            layer = self._assign_layer(part, features, owners, n_images)
            self.part_layers_.append(layer)
            rows = features[layer][owners[layer] == part].float()
            if len(rows) == 0:  # a part no training image shows: nothing to compare with, it does not score
                self.banks_.append(None)
                self.feature_range_.append([0.0, 1.0])
                continue
            bank = self._coreset(rows)
            distances = nearest_distances(rows, bank)
            self.banks_.append(bank.half())
            self.feature_range_.append([float(distances.min()), float(distances.max())])
        self.mask_bank_ = [masks[:, part].contiguous() for part in range(len(self.part_names_))]
        self.mask_scale_ = [self._mask_scale(stored.float()) for stored in self.mask_bank_]

    def _assign_layer(self, part: int, features, owners, n_images: int) -> str:
        """Area, then normalised WSS (module docstring): the candidate layer where this part is most compact among
        those that give it ``min_patches`` patches per image; the finest layer when none does."""
        best, best_spread = None, float("inf")
        for layer, rows in features.items():
            members = owners[layer] == part
            if members.sum() / n_images < self.min_patches:
                continue
            rows = rows.float()
            total = ((rows - rows.mean(0)) ** 2).sum(1).mean()
            inside = rows[members]
            spread = float(((inside - inside.mean(0)) ** 2).sum(1).mean() / total.clamp_min(1e-12))
            if spread < best_spread:
                best, best_spread = layer, spread
        if best is None:
            from vadkit.backbones import get_spec

            strides = get_spec(self.backbone).layers
            best = min(features, key=lambda name: strides[name])
        return best

    def _coreset(self, rows: torch.Tensor) -> torch.Tensor:
        k = max(1, int(round(self.coreset_ratio * len(rows))))
        if k >= len(rows):
            return rows
        projected = rows @ random_projection(rows.shape[1], PROJECTION_DIM, self.seed) \
            if rows.shape[1] > PROJECTION_DIM else rows
        return rows[greedy_kcenter(projected, k, start=start_index(projected, "mean"))]

    @staticmethod
    def _mask_scale(stored: torch.Tensor) -> float:
        """r: the largest value of |m - M*| * d over the training masks, each against its nearest other mask."""
        if len(stored) < 2:
            return 0.0
        flat = stored.flatten(1)
        distances = torch.cdist(flat, flat, p=1.0) / flat.shape[1]   # (N, N): no (N, N, h * w) temporary
        distances.fill_diagonal_(float("inf"))
        nearest, index = distances.min(dim=1)
        return float(((stored - stored[index]).abs() * nearest[:, None, None]).amax())

    # -- predict -------------------------------------------------------------------------------------
    def inference_module(self) -> SADSeMGraph:
        self._check_fitted("predict")
        return SADSeMGraph(self)

    def export_blocker(self) -> str | None:
        if self.segmenter == "maskrcnn":
            return ("its Mask R-CNN segmenter's detection graph is data-dependent (a varying number of instances), "
                    "which the ONNX exporter cannot capture; serve the .vad file, or use segmenter='otsu'")
        return None

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is None:  # built once per fitted state and device (it copies the banks to float32)
            self._graph = self.inference_module().to(self.device)
        with torch.inference_mode():
            return self._graph(images)

    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        if self._segmenter is not None:
            self._segmenter.to(device)
        self._graph = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._segmenter = self._graph = None
