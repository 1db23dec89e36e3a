"""One anomalib 2.7.0 DRAEM reference run on vadkit's split, in its own process (a fixed number of steps, one seed).

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_draem.py --dataset battery_weld --steps 200 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_draem.py --time-one-step   # one step, writes nothing

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.Draem`` with its defaults (enable_sspcab False, beta (0.1, 1.0)): anomalib's
reconstructive U-Net and discriminative U-Net, no backbone and no pre-trained weights (random init after
``seed_everything(seed)``). Input: anomalib's DRAEM pre-processor, ``Resize((256, 256), antialias=True)`` on the
[0, 1] float image, no ImageNet normalisation (``Draem.on_train_start`` refuses a Normalize; checked here too).

No DTD, no patch. ``Draem(dtd_dir=...)`` downloads the DTD texture set when ``dtd_dir`` is not a directory (its
default ``./datasets/dtd``), which fails offline. It is given an EMPTY temporary directory instead, so nothing is
downloaded and ``PerlinAnomalyGenerator(anomaly_source_path=<empty dir>)`` finds no source images. Its own
fallback then applies (anomalib/data/utils/generators/perlin.py, ``generate_perturbation``): the anomaly source is
the rotated Perlin noise itself, grey (the same value in R, G, B), ``0.5 * noise + 0.25``, passed through 3 of
anomalib's 10 random augmenters (ColorJitter contrast, brightness, sharpness, hue/saturation jitter, solarize,
posterize, invert, AutoAugment, equalize, affine) and pasted under the thresholded Perlin mask (noise > 0.5) with
blend factor beta ~ U(0.1, 1.0); each image is augmented with probability 0.5 (else mask all zero). So the
synthetic anomalies are noise-textured blobs rather than DTD textures: expect a weaker DRAEM than the paper's.
No anomalib code is changed.

Training, as anomalib's Lightning loop runs it, without a Trainer (``reference.run_trained``):
* ``seed_everything(seed)`` once before the model is built; every later draw (network init, the augmenter's
  choices, Perlin noise, masks, blend factors) comes from torch's global RNG in the fixed order of this script;
* data: the train list of ``vadkit.data.with_validation(load_split(...), val_ratio=0.1)`` (33 images on
  battery_weld) in batches of 8 (DRAEM's usual training batch; anomalib's datamodule default is 32), shuffled
  as anomalib's ``DataLoader(shuffle=True)`` without drop_last, replayed as ``torch.randperm`` epochs from a
  generator seeded with ``seed``: 5 steps per epoch (8, 8, 8, 8, 1) on battery_weld;
* each step: ``training_step`` (augmenter on the batch, reconstructive + discriminative forward, ``DraemLoss`` =
  L2 + SSIM of the reconstruction + focal loss of the predicted mask), ``zero_grad``, ``backward``, ``step``;
  optimizer and scheduler from ``configure_optimizers()``: Adam lr 1e-4 over ``model.model.parameters()``,
  ``MultiStepLR(milestones=[400, 600], gamma=0.1)`` stepped per epoch (Lightning's default interval), so at a
  few hundred steps (tens of epochs) the learning rate stays 1e-4; ``gradient_clip_val`` 0;
* exactly ``--steps`` optimizer steps (a partial batch counts as a step, like ``max_steps``); no validation, no
  checkpoint selection: the final weights are used.

Prediction: eval-mode forward, ``anomaly_map`` = softmax of the discriminative output (anomalous channel),
``pred_score`` its max, raw, no post-processing; ``--eval-batch`` (8 here by default) only bounds memory.
Metrics: vadkit's ``compute_metrics`` with vadkit's masks. Writes ``benchmarks/results/anomalib/<dataset>_draem
_steps<N>_seed<k>[_<tag>].npz`` (paths, labels, scores float32, maps float16) and the same ``.json``.
"""

from __future__ import annotations

import sys
import tempfile

import reference as ref

BATCH_SIZE = 8


def build(seed: int):
    from lightning.pytorch import seed_everything

    from anomalib.models import Draem

    seed_everything(seed, verbose=False)
    empty_dtd = tempfile.mkdtemp(prefix="no_dtd_")
    model = Draem(dtd_dir=empty_dtd, post_processor=False, evaluator=False, visualizer=False)
    sources = len(model.augmenter.anomaly_source_paths)
    if sources:
        raise RuntimeError(f"{empty_dtd} is not empty ({sources} images)")
    report = {"weights": "none (DRAEM has no backbone; anomalib's random init)",
              "dtd_dir": f"{empty_dtd} (empty: no anomaly source images, Perlin-noise fallback)",
              "anomaly_source_images": sources,
              "n_parameters": sum(p.numel() for p in model.model.parameters())}
    return model, report


def prepare(model, train, orders) -> dict:
    """``Draem.on_train_start``: the pre-processor must not normalise."""
    from anomalib.data.transforms.utils import extract_transforms_by_type
    from torchvision.transforms.v2 import Normalize

    if extract_transforms_by_type(model.pre_processor.transform, Normalize):
        raise ValueError("Transforms for DRAEM should not contain Normalize.")
    return {"normalize_in_preprocessor": False}


if __name__ == "__main__":
    if "--eval-batch" not in sys.argv:
        sys.argv += ["--eval-batch", str(BATCH_SIZE)]
    ref.run_trained("draem", build, BATCH_SIZE,
                    {"enable_sspcab": False, "beta": [0.1, 1.0], "anomaly_source": "none (empty dtd_dir)",
                     "weights": "none"},
                    prepare)
