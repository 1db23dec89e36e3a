"""One anomalib reference run: a method on a dataset with one seed, in its own process.

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/run.py \
        --dataset battery_weld --method patchcore --ratio 0.01 --seed 0

Writes to benchmarks/results/anomalib/ (``--out`` to change):
* ``<dataset>_<method>_<ratio|none>_seed<k>[_<tag>].npz``: ``paths`` (test images, vadkit's order), ``labels``,
  ``scores`` (raw pred_score, float32), ``maps`` (raw anomaly maps, 256x256, float16);
* the same name ``.json``: parameters, versions, timings, peak RSS, and vadkit's ``compute_metrics`` on these
  raw outputs (masks from vadkit's ``load_mask`` + ``Transform(256).mask_array``; none for mvtec_bottle).

Peak RSS is ``ru_maxrss`` of this process (Linux: KiB), read after fit and again at the end, so it belongs to
this run alone (the grid driver starts one process per run).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

import reference as ref


def run_name(dataset: str, method: str, ratio: float | None, seed: int, tag: str = "") -> str:
    ratio_text = "none" if ratio is None else f"{ratio:g}"
    return f"{dataset}_{method}_{ratio_text}_seed{seed}" + (f"_{tag}" if tag else "")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(ref.DATASETS), required=True)
    parser.add_argument("--method", choices=sorted(ref.METHODS), required=True)
    parser.add_argument("--ratio", type=float, default=None, help="PatchCore coreset_sampling_ratio")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--tag", default="", help="suffix of the output name (e.g. 'repeat' for a determinism rerun)")
    parser.add_argument("--out", type=Path, default=ref.RESULTS)
    args = parser.parse_args()
    if (args.method == "patchcore") != (args.ratio is not None):
        parser.error("--ratio is required for patchcore and meaningless for padim")

    import anomalib
    from vadkit.metrics import compute_metrics

    started, load_start = time.time(), os.getloadavg()
    split = ref.load_split(args.dataset)
    model, weights_report = ref.build_model(args.method, args.seed, args.ratio)
    fitted = ref.fit(model, split.train)
    rss_after_fit = peak_rss_mib()
    scores, maps, predict_seconds = ref.predict(model, split.test)
    labels = np.array([s.label for s in split.test], dtype=np.int64)
    paths = np.array([str(s.image_path) for s in split.test])

    masks = ref.masks_for(split.test) if ref.USE_MASKS[args.dataset] else None
    report = compute_metrics(labels, scores, masks, maps if masks is not None else None)

    args.out.mkdir(parents=True, exist_ok=True)
    name = run_name(args.dataset, args.method, args.ratio, args.seed, args.tag)
    np.savez_compressed(args.out / f"{name}.npz", paths=paths, labels=labels,
                        scores=scores.astype(np.float32), maps=maps.astype(np.float16))
    record = {
        "name": name,
        "dataset": args.dataset,
        "method": args.method,
        "ratio": args.ratio,
        "seed": args.seed,
        "tag": args.tag,
        "params": {**ref.METHODS[args.method], **({"coreset_sampling_ratio": args.ratio} if args.ratio else {}),
                   "pre_trained": False, "weights": "peer_weights.load_into_extractor",
                   "image_size": ref.IMAGE_SIZE, "batch_size": ref.BATCH_SIZE,
                   "preprocess": str(model.pre_processor.transform).replace("\n", " ")},
        "n_train": len(split.train),
        "n_test": len(split.test),
        "n_test_anomalous": int(labels.sum()),
        "memory_bank_rows": fitted.bank_rows,
        "fit_seconds": round(fitted.seconds, 3),
        "fit_extract_seconds": round(fitted.extract_seconds, 3),
        "fit_cpu_seconds": round(fitted.cpu_seconds, 3),
        "predict_ms_per_image": round(1000 * predict_seconds / len(split.test), 2),
        "peak_rss_mib_after_fit": round(rss_after_fit, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "metrics": report.as_dict(),
        "metrics_skipped": report.skipped,
        "masks": "vadkit load_mask + Transform(256).mask_array" if masks is not None else None,
        "weights_load": weights_report,
        "versions": {"anomalib": anomalib.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15_start": [round(v, 2) for v in load_start],  # the machine is shared: timings depend on it
        "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    ref.write_record(args.out, name, record, ("pixel_auroc", "pixel_aupro"),
                     f"fit {record['fit_seconds']:.1f} s, predict {record['predict_ms_per_image']:.1f} ms/img, "
                     f"peak RSS {record['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
