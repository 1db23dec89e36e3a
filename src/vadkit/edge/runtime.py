"""Run an exported model with onnxruntime, numpy and Pillow only: no torch, faiss or timm.

    from vadkit.edge import Runtime
    runtime = Runtime("bundle/")                       # written by `vadkit export MODEL.vad --out bundle/`
    for result in runtime.predict(["part1.png", "part2.png"]):
        result["score"], result["label"], result["map"]   # float, 0/1 (None if never calibrated), (H, W)

Images are read and preprocessed by the same code as training (:func:`vadkit.data.io.load_image`,
:meth:`vadkit.data.transforms.Transform.array`), so the runtime sees the pixels the model was fitted on. This
module and everything it imports must stay free of torch: a test imports it with torch, faiss and timm
blocked, and CI runs it in a virtual environment that has only onnxruntime, numpy, Pillow and vadkit
installed with ``--no-deps``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vadkit.data.io import load_image, to_rgb
from vadkit.data.transforms import Transform
from vadkit.edge.bundle import ONNX_NAME, read_bundle
from vadkit.errors import ParameterError, VadkitError

ImageLike = "str | Path | PIL.Image.Image | np.ndarray"


class Runtime:
    """An exported bundle, ready to predict. ``threads``: onnxruntime's intra-op threads (default: its own
    choice, one per physical core). ``providers``: onnxruntime execution providers (default: the CPU)."""

    def __init__(self, directory: str | Path, *, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise VadkitError("the edge runtime needs onnxruntime: pip install onnxruntime "
                              "(or pip install 'vadkit[edge]')") from None
        self.directory = Path(directory)
        self.spec: dict[str, Any] = read_bundle(self.directory)
        self.transform = Transform(**self.spec["transform"])
        self.threshold: float | None = self.spec.get("threshold")
        self.pixel_threshold: float | None = self.spec.get("pixel_threshold")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            if not (isinstance(threads, int) and threads >= 1):
                raise ParameterError(f"threads must be an integer >= 1, got {threads!r}")
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.directory / ONNX_NAME), options,
                                                    providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def method(self) -> str:
        return self.spec["method"]

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """One image (a path, a PIL image or an (H, W[, C]) uint8 array) -> the (3, H, W) float32 input."""
        return self.transform.array(self._as_image(image))

    @staticmethod
    def _as_image(image: ImageLike) -> Image.Image:
        if isinstance(image, (str, Path)):
            image = load_image(image)
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise ParameterError(f"an image array must be (H, W) or (H, W, C) uint8, got {image.dtype} "
                                     f"{image.shape}")
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            raise ParameterError(f"cannot read {type(image).__name__} as an image: give a path, a PIL image or "
                                 "a uint8 array")
        return to_rgb(image)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images (B, 3, H, W) float32 -> scores (B,) and maps (B, H, W), as the graph gives them."""
        scores, maps = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return scores, maps

    @property
    def transductive(self) -> bool:
        """The graph scores the images of one call against each other (MuSc): they are run as one batch."""
        return bool(self.spec.get("transductive", False))

    def predict_batches(self, images: Iterable[ImageLike], batch_size: int = 8) -> Iterator[list[dict[str, Any]]]:
        """:meth:`predict`, a batch at a time (constant memory for any number of images); a transductive model's
        images are one batch, whatever ``batch_size`` says."""
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if self.transductive:
            batch_size = float("inf")
        pending: list[tuple[Any, np.ndarray, tuple[int, int]]] = []
        for image in images:
            picture = self._as_image(image)
            pending.append((image, self.transform.array(picture), (picture.height, picture.width)))
            if len(pending) == batch_size:
                yield self._results(pending)
                pending = []
        if pending:
            yield self._results(pending)

    def predict(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 8) -> list[dict[str, Any]]:
        """One dict per image: ``score`` (float), ``label`` (1 when ``score >= threshold``, else 0; None for a
        model never calibrated), ``map`` ((H, W) float32 at the model's output size, on the evaluation grid as
        vadkit's predict gives it: a padded ``fit`` resize's padding cut away) and, for a path, ``path``."""
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]  # one image; a list, or an (N, H, W, C) array, is many
        return [result for batch in self.predict_batches(images, batch_size) for result in batch]

    def _results(self, pending: list[tuple[Any, np.ndarray, tuple[int, int]]]) -> list[dict[str, Any]]:
        scores, maps = self.run(np.stack([array for _, array, _ in pending]))
        results = []
        for (image, _, original_size), score, anomaly_map in zip(pending, scores, maps):
            anomaly_map = self.transform.to_evaluation_grid(anomaly_map, original_size)
            # compared in float64, as vadkit's predict does
            label = None if self.threshold is None else int(np.float64(score) >= np.float64(self.threshold))
            result = {"score": float(score), "label": label, "map": anomaly_map}
            if isinstance(image, (str, Path)):
                result["path"] = str(image)
            results.append(result)
        return results
