"""The model contract every vadkit method implements.

    model = vadkit.create_model("patchcore", backbone="mobilenet_v2", coreset_ratio=0.1)
    model.fit(train_dataset)        # normal images only
    pred = model.predict(images)    # Prediction(scores (N,), maps (N, H, W))
    model.calibrate(val_dataset)    # stores the image and pixel decision thresholds
    model.to("cuda")                # device is runtime state, never saved
    model.save("bottle.vad"); vadkit.load("bottle.vad")

Parameters are constructor keywords, as in scikit-learn: :meth:`AnomalyModel.get_params` reads them back
from the signature, which is also what a model file stores and what the CLI validates ``--param`` against.
``fit`` never changes a parameter: what it learns goes in attributes whose names end in ``_`` (the
memory bank, the resolved layers, the input size), listed in each class's ``learned`` tuple, which is
also what a model file stores (:meth:`AnomalyModel.state_dict`).

Two kinds of method share the contract. A one-pass method (memory bank, Gaussian) implements ``_fit``, which
receives the training images batch by batch once. A trained method subclasses
:class:`~vadkit.models.trained.TrainedModel`, whose shared loop (:mod:`vadkit.models.training`) owns epochs,
shuffling, validation, early stopping, checkpoints and budgets; the method writes its networks, its loss and
its optimiser. Both implement ``_predict_batch`` and :meth:`AnomalyModel.inference_module`, the method's
whole inference graph (images -> image scores and maps) as one pure-torch module, which export, serving and
profiling use. Zero-shot methods set ``requires_fit = False``.

Device: :meth:`AnomalyModel.to` moves a model's networks (``"cpu"``, ``"cuda"``, ``"auto"``). It is runtime
state, never saved: a model trained on a GPU loads on a CPU box.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from vadkit.data import ImageDataset, Sample, Transform
from vadkit.data.prefetch import prefetched
from vadkit.errors import ParameterError, VadkitError

#: Quantile of normal validation scores used as the threshold when the validation set has no anomalies.
NORMAL_QUANTILE = 0.99
#: what calibration sets (and fit resets); model files store them beside the learned state
CALIBRATION_KEYS = ("threshold", "threshold_rule", "threshold_source", "pixel_threshold", "pixel_threshold_rule")


def _on_cpu(value):
    return value.cpu() if isinstance(value, torch.Tensor) else value


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> the first GPU when CUDA is available, else the CPU; other names as torch reads them.
    Asking for CUDA on a machine without it is a clear error, not a crash in the first forward pass."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ParameterError(f"unknown device {device!r} ({error}); use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {str(device)!r} asked for, but this torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use 'cpu' or 'auto'")
    return device


class NotFittedError(VadkitError):
    """``predict``, ``calibrate`` or ``save`` was called before ``fit``."""


@dataclass
class Prediction:
    """Scores and maps for N images.

    ``scores`` (N,) float32: image anomaly scores, higher = more anomalous. ``maps`` (N, H, W) float32:
    pixel anomaly scores at the model's output size, on the evaluation grid (the model's view; for a padded
    ``fit`` resize, each image's content resampled over the whole grid, see :class:`~vadkit.data.Transform`). ``labels`` (N,) int 0/1 from the calibrated
    threshold (``score >= threshold``), or ``None`` when the model is not calibrated.
    """

    scores: np.ndarray
    maps: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def concatenate(cls, parts: Sequence[Prediction]) -> Prediction:
        labels = None if any(p.labels is None for p in parts) else np.concatenate([p.labels for p in parts])
        return cls(np.concatenate([p.scores for p in parts]), np.concatenate([p.maps for p in parts]), labels)


Images = "torch.Tensor | ImageDataset | Sequence[Sample | str | Path]"


class AnomalyModel(ABC):
    """Base class of every method. Subclasses set ``name`` and take their parameters as keywords."""

    name: ClassVar[str]
    #: batch size used by fit/predict when the caller passes none
    default_batch_size: ClassVar[int] = 8
    #: learned attributes a model file stores; every class adds its own (the tuples of the MRO are merged)
    learned: ClassVar[tuple[str, ...]] = ("input_size_",)
    #: False for a zero-shot method: it predicts without fit
    requires_fit: ClassVar[bool] = True
    #: True for a method whose images score each other (MuSc): a score depends on the set it was predicted in,
    #: so ``predict`` takes the whole set at once and runs give it the whole test split
    transductive: ClassVar[bool] = False
    #: the pretrained backbone's name, for methods built on one (runs and profiles report it)
    backbone: str | None = None

    def __init__(self) -> None:
        #: (H, W) of the images the model was fitted on; predict refuses other sizes
        self.input_size_: list[int] | None = None
        self.threshold: float | None = None
        self.threshold_rule: str | None = None
        #: what the thresholds were calibrated on: "validation" (with defects), "validation_normals" or "test"
        self.threshold_source: str | None = None
        #: the pixel decision threshold of the maps (see :meth:`calibrate`) and how it was chosen
        self.pixel_threshold: float | None = None
        self.pixel_threshold_rule: str | None = None
        self.fitted = False
        #: where the networks run and batches go (runtime state: never saved, see :meth:`to`)
        self.device = torch.device("cpu")

    # -- parameters ------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's keyword parameters: the only names ``create_model`` and ``--param`` accept."""
        named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.name != "self" and p.kind in named]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as plain values (what a model file stores to rebuild the model)."""
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def learned_attributes(cls) -> tuple[str, ...]:
        """Every learned attribute of this class and its bases, base classes first."""
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(vars(klass).get("learned", ())))
        return tuple(names)

    # -- input handling --------------------------------------------------------------------------
    @property
    @abstractmethod
    def transform(self) -> Transform:
        """How this model wants images resized and normalised (depends on its backbone)."""

    def as_dataset(self, data: Images) -> ImageDataset:
        """Wrap samples, paths or a dataset with this model's transform (re-wrapping a dataset that was
        built with another transform, so a user cannot feed wrongly normalised images by accident).

        Besides ImageDataset, any torch Dataset with a ``transform`` and ``with_transform(transform)`` (e.g.
        :class:`~vadkit.data.AugmentedDataset`) is accepted and re-built the same way when needed."""
        if isinstance(data, ImageDataset):
            return data if data.transform == self.transform else ImageDataset(data.samples, self.transform)
        if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "with_transform"):
            return data if data.transform == self.transform else data.with_transform(self.transform)
        if isinstance(data, (str, Path)):
            data = [data]
        samples = [item if isinstance(item, Sample) else Sample(Path(item)) for item in data]
        return ImageDataset(samples, self.transform)

    def n_batches(self, n_images: int, batch_size: int | None = None) -> int:
        """How many batches ``n_images`` make (for progress bars)."""
        return -(-n_images // (batch_size or self.default_batch_size))

    def _batches(self, data: Images, batch_size: int | None) -> Iterator[torch.Tensor]:
        for images, _ in self._sized_batches(data, batch_size):
            yield images

    def _sized_batches(self, data: Images, batch_size: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches of normalised images with the original ``(H, W)`` of each (None for a tensor: the tensor is
        the model's view and there is no original)."""
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
            raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(data, torch.Tensor):
            if data.ndim != 4 or data.shape[1] != 3:
                raise ValueError(f"expected an image batch (N, 3, H, W), got shape {tuple(data.shape)}")
            for images in data.split(batch_size or self.default_batch_size):
                yield images, None
            return
        loader = torch.utils.data.DataLoader(self.as_dataset(data), batch_size=batch_size or self.default_batch_size)
        for batch in prefetched(loader):  # the next batch is decoded while this one is computed
            yield batch["image"], batch.get("original_size")

    def _check_input_size(self, images: torch.Tensor) -> None:
        """Refuse images of another size than the fitted ones: features would not match what was learned
        (a memory bank of other scales, a Gaussian per position of another grid)."""
        size = list(images.shape[-2:])
        if self.input_size_ is not None and size != list(self.input_size_):
            height, width = self.input_size_
            raise VadkitError(f"this {self.name} model was fitted on {height}x{width} images but got {size[0]}x"
                              f"{size[1]}: pass image paths, samples or a dataset and let the model resize them, "
                              f"or resize tensors with model.transform (output {height}x{width})")

    # -- the contract ----------------------------------------------------------------------------
    def fit(self, data: Images, *, val: Images | None = None, batch_size: int | None = None,
            progress: bool | None = None) -> AnomalyModel:
        """Learn normality from ``data`` (normal images only). Returns ``self``.

        ``val``: held-out normal images; a trained method validates on them (early stopping, best
        checkpoint), a one-pass method does not need them. ``batch_size``: images per batch of the passes
        over the data (a trained method's training batch is its ``batch_size`` parameter).
        """
        dataset, _ = self._begin_fit(data, val)  # a one-pass method has no use for validation images
        self._fit_dataset(dataset, batch_size=batch_size, progress=progress)
        self.fitted = True
        return self

    def _begin_fit(self, data: Images, val: Images | None):
        """What every fit does before it learns (the trained methods' ``fit`` too): the training and
        validation images as datasets, an empty training set refused, a previous fit's state cleared."""
        dataset = data if isinstance(data, torch.Tensor) else self.as_dataset(data)
        if len(dataset) == 0:
            raise VadkitError("fit needs at least one training image")
        if val is not None and not isinstance(val, torch.Tensor):
            val = self.as_dataset(val)
        self.input_size_ = None
        for key in CALIBRATION_KEYS:
            setattr(self, key, None)
        self._prepare_fit()
        return dataset, val

    def _prepare_fit(self) -> None:
        """Called by :meth:`fit` before any image is seen (e.g. to record the backbone's weights)."""

    def _fit_dataset(self, dataset, *, batch_size: int | None, progress: bool | None) -> None:
        """One pass over the training images, batch by batch, into :meth:`_fit`."""
        from vadkit.progress import track

        batches = track(self._sized(self._batches(dataset, batch_size)), f"{self.name}: extracting training features",
                        total=self.n_batches(len(dataset), batch_size), enabled=progress)
        self._fit(batches, n_images=len(dataset), progress=progress)

    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        """Learn from one pass of batches of normalised images (B, 3, H, W) (one-pass methods)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _fit nor its own fit")

    # -- device ----------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> AnomalyModel:
        """Run on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``: a GPU when there is one).
        Returns ``self``. The device is never saved with the model."""
        device = resolve_device(device)
        self._move_to(device)
        self.device = device
        return self

    def _move_to(self, device: torch.device) -> None:
        """Move the model's networks and tensors that take part in prediction (subclasses with any)."""

    def _sized(self, batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Record the input size from the first training batch, hold every later one to it, and send each
        batch to the model's device."""
        for images in batches:
            if self.input_size_ is None:
                self.input_size_ = list(images.shape[-2:])
            self._check_input_size(images)
            yield images.to(self.device)

    @torch.inference_mode()
    def predict_batches(self, data: Images, *, batch_size: int | None = None) -> Iterator[Prediction]:
        """Stream predictions batch by batch (constant memory for any number of images)."""
        self._check_fitted("predict")
        transform = self.transform
        for images, original_sizes in self._sized_batches(data, batch_size):
            self._check_input_size(images)
            scores, maps = self._predict_batch(images.to(self.device))
            scores = scores.float().cpu().numpy()
            maps = maps.float().cpu().numpy()
            if transform.pads and original_sizes is not None:  # padding never scores: see Transform
                maps = np.stack([transform.to_evaluation_grid(m, size.tolist()) for m, size in zip(maps, original_sizes)])
            # Compared in float64, as the metrics do: numpy would round the threshold to the scores' float32.
            labels = None if self.threshold is None else (scores >= np.float64(self.threshold)).astype(np.int64)
            yield Prediction(scores, maps, labels)

    def predict(self, data: Images, *, batch_size: int | None = None, progress: bool | None = None) -> Prediction:
        """Scores (N,) and maps (N, H, W) for a batch tensor, an ImageDataset, samples or image paths."""
        from vadkit.progress import track

        total = None
        if not isinstance(data, torch.Tensor):
            data = self.as_dataset(data)  # once: building a dataset checks (decodes) every file
            total = self.n_batches(len(data), batch_size)
        batches = self.predict_batches(data, batch_size=batch_size)
        parts = list(track(batches, "predicting", total=total, enabled=progress if total else False))
        return Prediction.concatenate(parts)

    def calibrate(self, data: Images, *, batch_size: int | None = None, progress: bool | None = None,
                  source: str = "validation images") -> float:
        """Choose and store the image and pixel decision thresholds from held-out data; returns the image one.

        Image threshold: F1-optimal when the data holds anomalies (labels from the dataset), otherwise the
        99th percentile of the normal scores (about 1% false alarms on normal parts). Pixel threshold: see
        :meth:`calibrate_pixels`. ``threshold_source`` becomes ``"validation"`` (the data had anomalies) or
        ``"validation_normals"``; ``source`` words the rules.
        """
        dataset = self.as_dataset(data)
        prediction = self.predict(dataset, batch_size=batch_size, progress=progress)
        labels = dataset.labels
        threshold = self.calibrate_from_scores(prediction.scores, labels, source=source)
        self.calibrate_pixels(prediction.maps, labels, dataset.masks_array() if dataset.has_masks else None,
                              source=source)
        self.threshold_source = "validation" if labels.max() == 1 else "validation_normals"
        return threshold

    def calibrate_from_scores(self, scores: np.ndarray, labels: np.ndarray, source: str = "validation images") -> float:
        """The image threshold of :meth:`calibrate`, from scores already computed."""
        from vadkit.metrics import f1_max_threshold

        labels = np.asarray(labels)
        if len(labels) == 0:
            raise VadkitError("calibrate needs at least one image")
        if labels.min() != labels.max():
            _, threshold = f1_max_threshold(labels, scores)
            self.threshold_rule = f"F1-optimal on {source} ({len(labels)} images, {int(labels.sum())} anomalous)"
        elif labels[0] == 0:
            threshold = float(np.quantile(scores, NORMAL_QUANTILE))
            self.threshold_rule = f"{NORMAL_QUANTILE:.0%} quantile of normal scores on {source} ({len(labels)} images)"
        else:
            raise VadkitError("calibrate needs normal images (all given images are labelled anomalous)")
        self.threshold = float(threshold)
        return self.threshold

    def calibrate_pixels(self, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None,
                         source: str = "validation images") -> float:
        """Choose and store the pixel threshold of the maps; returns it.

        The image threshold decides whether a part is defective; the pixel threshold decides which pixels
        of a defective part are drawn as the defect. Maps are not on the image score's scale (an image
        score may be a reweighted or smoothed maximum), so the two are calibrated separately. Rule: with
        ground-truth masks of anomalous images, the F1-optimal pixel threshold over all pixels; otherwise
        the 99th percentile of the normal images' map maxima (99% of normal parts show no defect pixel).
        """
        from vadkit.metrics import f1_max_from_curve, pixel_clf_curve

        labels = np.asarray(labels)
        if masks is not None and labels.max() == 1 and np.asarray(masks).any() and not np.asarray(masks).all():
            _, threshold = f1_max_from_curve(*pixel_clf_curve(masks, maps), unit="pixels")
            self.pixel_threshold_rule = f"pixel F1-optimal on {source} ({len(labels)} images with masks)"
        elif (labels == 0).any():
            maxima = np.asarray(maps)[labels == 0].reshape(int((labels == 0).sum()), -1).max(axis=1)
            threshold = float(np.quantile(maxima, NORMAL_QUANTILE))
            self.pixel_threshold_rule = (f"{NORMAL_QUANTILE:.0%} quantile of normal images' map maxima on {source} "
                                         f"({len(maxima)} images)")
        else:
            raise VadkitError("calibrating the pixel threshold needs normal images or masks of the anomalous ones")
        self.pixel_threshold = float(threshold)
        return self.pixel_threshold

    def save(self, path: str | Path) -> Path:
        """Write one self-describing file: format version, parameters, learned state, thresholds."""
        from vadkit.models.persistence import save_model

        self._check_fitted("save")
        return save_model(self, path)

    def state_dict(self) -> dict[str, Any]:
        """The learned attributes (tensors and plain values) a model file stores, loaded weights-only;
        tensors on the CPU, so a model fitted on a GPU loads anywhere."""
        return {name: _on_cpu(getattr(self, name)) for name in self.learned_attributes()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a missing attribute is a ``KeyError`` naming it)."""
        for name in self.learned_attributes():
            setattr(self, name, state[name])

    # -- for subclasses --------------------------------------------------------------------------
    @abstractmethod
    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> scores (B,), maps (B, H, W)."""

    @abstractmethod
    def inference_module(self) -> torch.nn.Module:
        """The whole inference graph as one pure-torch module: normalised images (B, 3, H, W) ->
        ``(scores (B,), maps (B, H, W))``, the same numbers :meth:`predict` gives (what export, serving and
        profiling run). Built from the fitted state; it shares its tensors with the model."""

    # -- optional hooks (export and profiling read them) -----------------------------------------
    def export_blocker(self) -> str | None:
        """Why this fitted model's graph cannot be exported to ONNX, or None (the usual case)."""
        return None

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        """Multiply-accumulates done outside torch (e.g. a faiss search), which torch's counter cannot see."""
        return {}

    @property
    def extractor(self) -> torch.nn.Module | None:
        """The frozen pretrained feature extractor, for methods built on one (the profiler's floor)."""
        return None

    def _check_fitted(self, verb: str) -> None:
        if not self.fitted and self.requires_fit:
            raise NotFittedError(f"call fit() before {verb}(): this {self.name} model has not been trained")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
