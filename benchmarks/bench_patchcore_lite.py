"""PatchCore vs PatchCore-Lite (product-quantised bank), on one coreset per dataset.

    python benchmarks/bench_patchcore_lite.py [--datasets mvtec_bottle ...] [--configs default paper ...] [--rounds 5]

Per dataset (skipped when absent from ../shared/datasets): PatchCore is fitted once (mobilenet_v2, 256 px,
coreset 10%, seed 0); every PatchCore-Lite configuration compresses that same bank
(``PatchCoreLite.from_patchcore``, identical to fitting it with the same seed). Then:

* search quality on the first 8 test images' patches (real features): recall@1 of the true nearest bank
  vector (exact faiss search on the float bank) and the mean relative error of the nearest-neighbour
  distance, i.e. of the patch anomaly score;
* each model is saved, and a fresh child process (fork + exec, so it shares no pages with this one) loads
  the file and predicts the whole test split, batch 8: end-to-end ms per image (image decoding included,
  after one warm-up batch), peak RSS of that process (``VmHWM``; it holds the test maps as float16 for the
  pixel metrics, the same for every configuration), image AUROC, pixel AUROC and AU-PRO (30% FPR) where
  the dataset has masks;
* latency, measured apart because the machine is shared: one child loads every model of the dataset and
  predicts the same 16 preloaded test images (batch 8) with each in turn, ``--rounds`` times in a rotating
  order, so that a load change hits all configurations alike; the median ms per image is reported with
  faiss' default threads and with one faiss thread (faiss and torch ship separate OpenMP runtimes whose
  spinning threads compete on a small CPU);
* bank bytes = the sum of ``nbytes`` of the tensors in ``state_dict()``; file bytes = the model file.

Prints one markdown table. Timings are wall-clock on whatever machine runs it (2 CPU cores here, shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("VADKIT_SHARED_DATASETS",
                            Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
DATASETS = {
    "mvtec_bottle": ("mvtec", SHARED / "mvtec_bottle" / "bottle"),
    "magnetic_tile": ("mtd", SHARED / "magnetic_tile"),
}
BASE_PARAMS = {"backbone": "mobilenet_v2", "image_size": 256, "coreset_ratio": 0.1, "seed": 0}
#: name -> PatchCore-Lite parameters (None: PatchCore itself)
CONFIGS = {
    "patchcore": None,
    "default": {},
    "k64": {"rerank_k": 64},
    "pq8x8-sq8": {"pq_subquantizers": 8, "pq_bits": 8, "rerank": "sq8"},
    "paper": {"pq_subquantizers": 8, "pq_bits": 8, "rerank": "decoded"},
    "pq32x4-decoded": {"rerank": "decoded"},
}
BATCH = 8


def _status_mb(key: str) -> float:
    """VmHWM / VmRSS of this process in MB. Not ``ru_maxrss``: after fork + exec that also counts the
    parent's pages before exec (getrusage(2)), which here would be the parent's whole feature store."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(model_path: str, layout: str, root: str) -> None:
    """Load a model file and predict the test split; print one JSON line (run in a fresh process)."""
    import numpy as np

    import vadkit
    from vadkit.data import ImageDataset, load_split
    from vadkit.metrics import aupro, auroc, pixel_auroc

    model = vadkit.load(model_path)
    test = ImageDataset(load_split(layout, root).test, model.transform)
    rss_loaded = _status_mb("VmRSS")
    scores = np.empty(len(test), np.float32)
    maps = None
    row = 0
    start = None
    for i, prediction in enumerate(model.predict_batches(test, batch_size=BATCH)):
        if maps is None:
            maps = np.empty((len(test), *prediction.maps.shape[1:]), np.float16)
        scores[row:row + len(prediction)] = prediction.scores
        maps[row:row + len(prediction)] = prediction.maps
        row += len(prediction)
        if i == 0:
            start, first = time.perf_counter(), row  # the first batch is the warm-up
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    labels = test.labels
    result = {"predict_ms": 1000 * seconds / max(1, row - first), "peak_rss_mb": peak, "rss_after_load_mb": rss_loaded,
              "image_auroc": auroc(labels, scores)}
    if any(sample.mask_path is not None for sample in test.samples):
        masks = test.masks_array()
        result["pixel_auroc"] = pixel_auroc(masks, maps.astype(np.float32))
        result["pixel_aupro"] = aupro(masks, maps.astype(np.float32))
    print(json.dumps(result))


def latency_child(layout: str, root: str, rounds: str, *paths: str) -> None:
    """Interleaved timing of several model files on the same preloaded images; prints one JSON line."""
    import faiss
    import numpy as np
    import torch

    import vadkit
    from vadkit.data import ImageDataset, load_split

    models = [vadkit.load(path) for path in paths]
    test = ImageDataset(load_split(layout, root).test[:16], models[0].transform)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    default_threads = faiss.omp_get_max_threads()
    times = {(path, threads): [] for path in paths for threads in (default_threads, 1)}
    for model in models:
        model.predict(images[:BATCH], batch_size=BATCH)  # warm-up: weights, faiss tables, allocator
    for round_ in range(int(rounds)):
        shift = round_ % len(models)
        for path, model in list(zip(paths, models))[shift:] + list(zip(paths, models))[:shift]:
            for threads in (default_threads, 1):
                faiss.omp_set_num_threads(threads)
                start = time.perf_counter()
                model.predict(images, batch_size=BATCH)
                times[path, threads].append(1000 * (time.perf_counter() - start) / len(images))
    faiss.omp_set_num_threads(default_threads)
    print(json.dumps({path: {"predict_ms": float(np.median(times[path, default_threads])),
                             "predict_ms_faiss1": float(np.median(times[path, 1])),
                             "faiss_threads": default_threads, "torch_threads": torch.get_num_threads()}
                      for path in paths}))


def search_quality(patchcore, lite, queries) -> tuple[float, float]:
    import numpy as np

    exact_d, exact_i = patchcore.index.search(queries, 1)
    d, i = lite.bank_.search(queries, 1, rerank_k=lite.rerank_k)
    relative = np.abs(d[:, 0] - exact_d[:, 0]) / np.maximum(exact_d[:, 0], 1e-12)
    return float(np.mean(i[:, 0] == exact_i[:, 0])), float(relative.mean())


def run_dataset(name: str, configs: list[str], workdir: Path, rounds: int) -> list[dict]:
    import numpy as np
    import torch

    from vadkit.data import ImageDataset, load_split
    from vadkit.models import create_model
    from vadkit.models.patchcore_lite import PatchCoreLite
    from vadkit.ops.patch_features import flatten_patches

    layout, root = DATASETS[name]
    split = load_split(layout, root)
    patchcore = create_model("patchcore", **BASE_PARAMS)
    start = time.perf_counter()
    patchcore.fit(ImageDataset(split.train, patchcore.transform), batch_size=BATCH, progress=False)
    fit_s = time.perf_counter() - start
    test = ImageDataset(split.test[:8], patchcore.transform)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    queries = np.ascontiguousarray(flatten_patches(patchcore.embed(images)).float().numpy())
    rows = []
    for config in configs:
        params = CONFIGS[config]
        row = {"dataset": name, "config": config, "n_train": len(split.train), "n_test": len(split.test),
               "n_bank": int(patchcore.memory_bank_.shape[0])}
        if params is None:
            model, row["build_s"] = patchcore, fit_s
            row.update(recall_at_1=1.0, score_rel_error=0.0)
        else:
            start = time.perf_counter()
            model = PatchCoreLite.from_patchcore(patchcore, **params)
            row["build_s"] = time.perf_counter() - start
            row["recall_at_1"], row["score_rel_error"] = search_quality(patchcore, model, queries)
            row["params"] = {k: getattr(model, k) for k in ("pq_subquantizers", "pq_bits", "rerank", "rerank_k")}
            row["params"]["pq_subquantizers"] = model.bank_.subquantizers
        row["bank_bytes"] = sum(v.nbytes for v in model.state_dict().values() if isinstance(v, torch.Tensor))
        path = model.save(workdir / f"{name}-{config}.vad")
        row["file_bytes"] = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--child", str(path), layout, str(root)],
                             capture_output=True, text=True, check=True)
        child_result = json.loads(out.stdout.strip().splitlines()[-1])
        row["end_to_end_ms"] = child_result.pop("predict_ms")
        row.update(child_result, path=str(path))
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    out = subprocess.run([sys.executable, __file__, "--latency", layout, str(root), str(rounds),
                          *(row["path"] for row in rows)], capture_output=True, text=True, check=True)
    latency = json.loads(out.stdout.strip().splitlines()[-1])
    for row in rows:
        row.update(latency[row.pop("path")])
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    lines = ["| dataset | config | M×bits, re-rank, k | recall@1 | score rel. err | image AUROC | pixel AUROC | "
             "AU-PRO | bank KB | file KB | predict ms/img | same, 1 faiss thread | end-to-end ms/img | "
             "peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("params")
        setting = "exact (float32)" if p is None else \
            f"{p['pq_subquantizers']}×{p['pq_bits']}, {p['rerank']}, {p['rerank_k']}"
        lines.append(f"| {r['dataset']} | {r['config']} | {setting} | {r['recall_at_1']:.3f} | "
                     f"{r['score_rel_error']:.4f} | {r['image_auroc']:.4f} | {fmt(r.get('pixel_auroc'), '.4f')} | "
                     f"{fmt(r.get('pixel_aupro'), '.4f')} | {r['bank_bytes'] / 1024:.0f} | "
                     f"{r['file_bytes'] / 1024:.0f} | {r['predict_ms']:.1f} | {r['predict_ms_faiss1']:.1f} | "
                     f"{r['end_to_end_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--latency":
        latency_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            if not DATASETS[name][1].is_dir():
                print(f"skipping {name}: {DATASETS[name][1]} not found", file=sys.stderr)
                continue
            rows += run_dataset(name, args.configs, Path(tmp), args.rounds)
    import torch

    print(f"torch threads {torch.get_num_threads()}, batch {BATCH}, {BASE_PARAMS}")
    print(table(rows))


if __name__ == "__main__":
    main()
