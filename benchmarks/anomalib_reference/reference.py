"""anomalib 2.7.0 PatchCore / PaDiM on vadkit's own splits: the pieces that run.py and the checks share.

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

What is anomalib's and what is ours:
* Files: vadkit's layouts (``vadkit.data.load_split``) list the train and test images, so both libraries see
  exactly the same files in the same order.
* Image decoding and preprocessing: anomalib's. ``anomalib.data.utils.read_image`` (PIL ``convert("RGB")``,
  float32 in [0, 1]) and then the model's own default pre-processor transform (``model.pre_processor.transform``:
  torchvision v2 ``Resize((256, 256), antialias=True)`` on the float tensor, ImageNet ``Normalize``), which is
  what anomalib's ``PreProcessor.on_{train,validation,test}_batch_start`` hooks apply inside its Lightning loops.
* The model: anomalib's Lightning module (``Patchcore`` / ``Padim``) built with ``pre_trained=False`` and the
  offline ImageNet MobileNetV2 weights loaded by ``/work/shared/anomalib-reference/peer_weights.py``.
  Training calls what anomalib's loop calls: ``model.model`` in train mode forward on every training batch
  (``training_step``), then ``model.fit()`` (``MemoryBankMixin.on_train_epoch_end`` calls it once).
  Prediction: ``model.model`` in eval mode returns ``InferenceBatch(pred_score, anomaly_map)``: the raw values,
  before anomalib's post-processor (min-max normalisation, thresholds), which is never run.
* Masks and metrics: vadkit's (``load_mask`` + ``Transform(256).mask_array``; ``compute_metrics``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("VADKIT_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "anomalib"
IMAGE_SIZE = 256
BATCH_SIZE = 32  # anomalib's default train/eval batch size for its datamodules

DATASETS = {  # name -> (vadkit layout, root); masks are read only where the layout pairs them
    "battery_weld": ("mvtec", SHARED / "datasets" / "battery_weld" / "welding"),
    "magnetic_tile": ("mtd", SHARED / "datasets" / "magnetic_tile"),
    "mvtec_bottle": ("mvtec", SHARED / "datasets" / "mvtec_bottle" / "bottle"),
}
USE_MASKS = {"battery_weld": True, "magnetic_tile": True, "mvtec_bottle": False}  # bottle copy has no masks

METHODS = {
    # PatchCore: vadkit's default pair (stride 8 / 16) = timm blocks.2 / blocks.4
    "patchcore": {"backbone": "mobilenetv2_100", "layers": ["blocks.2", "blocks.4"], "num_neighbors": 9},
    # PaDiM: stride 4 / 8 / 16, 100 of the 24 + 32 + 96 = 152 channels
    "padim": {"backbone": "mobilenetv2_100", "layers": ["blocks.1", "blocks.2", "blocks.4"], "n_features": 100},
}


def peer_weights():
    """The shared loader of the offline ImageNet MobileNetV2 weights into timm's ``mobilenetv2_100``."""
    sys.path.insert(0, str(SHARED / "anomalib-reference"))
    import peer_weights as pw

    return pw


def load_split(dataset: str):
    """vadkit's split of ``dataset`` (train and test ``Sample`` lists, in vadkit's order)."""
    from vadkit.data import load_split as vadkit_load_split

    layout, root = DATASETS[dataset]
    if not root.exists():
        raise SystemExit(f"dataset not found: {root}")
    return vadkit_load_split(layout, root)


def masks_for(samples) -> np.ndarray:
    """(N, 256, 256) bool ground truth exactly as vadkit evaluates it (all-False for normal images)."""
    from vadkit.data import Transform, load_mask

    transform = Transform(image_size=IMAGE_SIZE)
    out = np.zeros((len(samples), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i, sample in enumerate(samples):
        if sample.mask_path is not None:
            out[i] = transform.mask_array(load_mask(sample.mask_path))
    return out


def build_model(method: str, seed: int, coreset_ratio: float | None = None):
    """anomalib's Lightning module with the offline weights; the global RNGs are seeded first.

    ``lightning.pytorch.seed_everything(seed)`` seeds ``random``, ``numpy`` and ``torch`` once, before the model
    is built, as anomalib's CLI / ``Engine`` runs do; every later draw (PaDiM's channel ``randperm`` in the
    constructor, PatchCore's sparse random projection and coreset start in ``fit``) then follows from ``seed``
    and the fixed sequence of calls in this module.
    """
    from lightning.pytorch import seed_everything

    seed_everything(seed, verbose=False)
    params = dict(METHODS[method])
    common = {"pre_trained": False, "post_processor": False, "evaluator": False, "visualizer": False}
    if method == "patchcore":
        from anomalib.models import Patchcore

        model = Patchcore(coreset_sampling_ratio=coreset_ratio, **params, **common)
    elif method == "padim":
        from anomalib.models import Padim

        model = Padim(**params, **common)
    else:
        raise ValueError(method)
    report = peer_weights().load_into_extractor(model.model.feature_extractor.feature_extractor)
    return model, report


def load_batches(samples, transform, batch_size: int = BATCH_SIZE):
    """Yield ``(B, 3, 256, 256)`` float tensors: anomalib's image reader, then the model's pre-processor transform.

    Each image is resized on its own (the images of a dataset may differ in size); Resize and Normalize act per
    image, so this equals transforming a stacked batch.
    """
    from anomalib.data.utils import read_image
    from torchvision import tv_tensors

    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [transform(tv_tensors.Image(read_image(s.image_path, as_tensor=True))) for s in chunk]
        yield torch.stack([torch.as_tensor(im) for im in images])


@dataclass
class FitResult:
    seconds: float
    extract_seconds: float  # data loading + forward over the training images (part of seconds)
    cpu_seconds: float  # process CPU time (all threads) of the fit: less sensitive to a busy machine than wall time
    bank_rows: int | None  # PatchCore memory bank size after the coreset


def fit(model, train_samples) -> FitResult:
    """What anomalib's training epoch does: forward every training batch in train mode, then ``model.fit()``."""
    transform = model.pre_processor.transform
    start, cpu_start = time.perf_counter(), time.process_time()
    model.model.train()
    for batch in load_batches(train_samples, transform):
        model.model(batch)  # PatchCore: appends to embedding_store; PaDiM: appends to memory_bank
    extracted = time.perf_counter()
    model.fit()  # PatchCore: subsample_embedding(coreset_sampling_ratio); PaDiM: Gaussian fit
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.model.eval()
    bank = getattr(model.model, "memory_bank", None)
    rows = int(bank.shape[0]) if isinstance(bank, torch.Tensor) else None
    return FitResult(seconds=seconds, extract_seconds=extracted - start, cpu_seconds=cpu_seconds, bank_rows=rows)


def predict(model, test_samples) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw ``pred_score`` (N,) float32 and ``anomaly_map`` (N, 256, 256) float32 from the eval-mode torch model."""
    transform = model.pre_processor.transform
    model.model.eval()
    scores, maps = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for batch in load_batches(test_samples, transform):
            out = model.model(batch)
            scores.append(out.pred_score.reshape(-1).float().numpy())
            maps.append(out.anomaly_map.reshape(len(batch), IMAGE_SIZE, IMAGE_SIZE).float().numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(scores), np.concatenate(maps), seconds


def write_record(out: Path, name: str, record: dict, pixel_keys: tuple[str, ...], tail: str) -> None:
    """Write a run's JSON to ``out/<name>.json`` and print its one-line summary: image AUROC, the pixel
    metrics in ``pixel_keys`` (when the run has masks), then ``tail``."""
    import json

    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    metrics = record["metrics"]
    labels = {"pixel_auroc": "pixel AUROC", "pixel_aupro": "AU-PRO", "pixel_f1_max": "F1-max"}
    pixel = "".join(f", {labels[key]} {metrics[key]:.4f}" for key in pixel_keys) if "pixel_auroc" in metrics else ""
    print(f"{name}: image AUROC {metrics['image_auroc']:.4f}{pixel}; {tail}")
