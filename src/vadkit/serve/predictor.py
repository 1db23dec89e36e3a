"""What ``vadkit serve`` serves: one :class:`Predictor` interface over an exported bundle (onnxruntime) or a
``.vad`` model file (PyTorch); :func:`load_predictor` is the one place that tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vadkit.errors import ModelFileError


@dataclass
class Predictor:
    """A model as the server sees it, whatever runs it.

    ``preprocess``: an RGB PIL image -> the (3, H, W) float32 input. ``run``: a (B, 3, H, W) float32 batch ->
    scores (B,) and maps (B, H, W). Both are called from worker threads, ``run`` from one thread only.
    ``to_evaluation_grid``: a map and the image's original ``(H, W)`` -> the map with any ``fit`` padding cut
    away (:meth:`vadkit.data.Transform.to_evaluation_grid`), what vadkit's predict returns.
    """

    name: str
    method: str
    input_size: tuple[int, int]
    threshold: float | None
    pixel_threshold: float | None
    preprocess: Callable[[Image.Image], np.ndarray]
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    to_evaluation_grid: Callable[[np.ndarray, tuple[int, int]], np.ndarray]


def load_predictor(source: str | Path, *, threads: int | None = None) -> Predictor:
    """A folder written by ``vadkit export`` (onnxruntime; torch is not imported) or a ``.vad`` file (PyTorch).
    ``threads``: onnxruntime's intra-op threads for a bundle, torch's and faiss' for a model file (default: the
    library's choice for a bundle, the CPUs available for a model file, as every vadkit command)."""
    source = Path(source)
    if not source.exists():
        raise ModelFileError(f"{source} does not exist: give a .vad model file or a folder written by "
                             "`vadkit export MODEL.vad --out DIR`")
    if source.is_dir():
        return _bundle_predictor(source, threads)
    return _model_file_predictor(source, threads)


def _bundle_predictor(directory: Path, threads: int | None) -> Predictor:
    from vadkit.edge.runtime import Runtime

    runtime = Runtime(directory, threads=threads)
    return Predictor(name=directory.name, method=runtime.method, input_size=tuple(runtime.transform.output_size),
                     threshold=runtime.threshold, pixel_threshold=runtime.pixel_threshold,
                     preprocess=runtime.preprocess, run=runtime.run,
                     to_evaluation_grid=runtime.transform.to_evaluation_grid)


def _model_file_predictor(path: Path, threads: int | None) -> Predictor:
    from vadkit.threads import set_threads

    set_threads(threads)  # before torch and faiss start their thread pools (vadkit.threads)
    import torch

    from vadkit.models import load_model

    model = load_model(path)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prediction = model.predict(torch.from_numpy(batch), batch_size=len(batch), progress=False)
        return prediction.scores, prediction.maps

    return Predictor(name=path.name, method=model.name, input_size=tuple(model.transform.output_size),
                     threshold=model.threshold, pixel_threshold=model.pixel_threshold,
                     preprocess=model.transform.array, run=run,
                     to_evaluation_grid=model.transform.to_evaluation_grid)
