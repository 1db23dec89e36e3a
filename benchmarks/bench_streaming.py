"""Streaming PatchCore on large training sets: fit time, peak memory and image AUROC vs the number of images.

    python benchmarks/bench_streaming.py                      # N = 1000 5000 25000, the baseline, the plot
    python benchmarks/bench_streaming.py --sizes 1000 5000    # a subset
    python benchmarks/bench_streaming.py --quality            # streaming vs exact greedy on a subsample
    python benchmarks/bench_streaming.py --plot               # redraw the plot from the results file

Training sets are made from real data: N seeded random crops, 95-100% of each side, no flips
(:class:`vadkit.data.AugmentedDataset`), of the 761 normal training images of magnetic_tile (``mtd`` layout),
resized to 224x224: 28x28 = 784 patches per image (mobilenet_v2 stride 8), so 25,000 images are 19.6M
patches. Why so mild: the test images are whole tiles, and PatchCore matches patches *with* their position
relative to the image border (the CNN's zero padding). Measured on one view per training image (N = 761,
so the bank has the baseline's size), image AUROC 0.962 unaugmented, 0.929 with 95-100% crops, 0.918 with
90-100%, 0.888 with 80-100%, 0.905 with flips alone: stronger augmentation makes a different, harder
training set, and the AUROC comparison would measure the augmentation, not the streaming coreset.
``--crop MIN MAX`` and ``--flips`` change it.

Every configuration runs in its own child process, so its peak RSS (``ru_maxrss``, read after fit and again
after evaluation) is its own. Evaluation: image AUROC on the magnetic_tile test split (191
normal, 392 defective images) at the same resolution. Baseline: PatchCore fitted on the ordinary 761-image
split with the same parameters (its 597k patches fit in ``max_patches_in_memory``: the exact, non-streaming
coreset). Results: ``benchmarks/results/streaming.jsonl`` (one JSON row per run) and
``benchmarks/results/streaming_memory.png`` (peak RSS vs N; BENCHMARKS.md shows a copy kept in
``docs/figures/``), and a markdown table with DeLong's paired test of each N against the baseline.

``--quality``: the same-quality check. Patch features of a random subset of training images (100k patches
by default) are streamed image by image through :class:`~vadkit.ops.streaming_coreset.StreamingKCenter`
with a buffer of a tenth of them (the 25k run's ratio: 2M of 19.6M), and compared with the exact greedy
k-center on all of them (``search="exact"``): coverage radius over the subsample, and image AUROC of
PatchCore with each bank. Rows go to ``benchmarks/results/streaming_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("VADKIT_SHARED_DATASETS", HERE.parents[1] / "shared" / "datasets"))
MTD = SHARED / "magnetic_tile"
IMAGE_SIZE = 224


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def score_test_split(model, test, batch_size: int):
    """Image scores on the test split and predict ms per image."""
    start = time.perf_counter()
    scores = model.predict(test, batch_size=batch_size, progress=False).scores
    return scores, 1000 * (time.perf_counter() - start) / len(test)


def image_auroc(model, test, batch_size: int) -> tuple[float, float]:
    """Image AUROC on the test split and predict ms per image."""
    from vadkit.metrics import auroc

    scores, predict_ms = score_test_split(model, test, batch_size)
    return float(auroc(test.labels, scores)), predict_ms


def child(args: argparse.Namespace) -> None:
    """One fit + evaluation; prints one JSON row."""
    import torch

    from vadkit.data import AugmentedDataset, ImageDataset, load_split
    from vadkit.metrics import auroc
    from vadkit.models.patchcore import PatchCore

    rss_imports = peak_rss_mb()
    model = PatchCore(image_size=IMAGE_SIZE, coreset_ratio=args.ratio, bank_dtype=args.bank_dtype,
                      max_patches_in_memory=args.max_patches)
    split = load_split("mtd", MTD)
    if args.n:
        train = AugmentedDataset(split.train, model.transform, args.n, crop=tuple(args.crop), flips=args.flips,
                                 seed=0)
    else:
        train = ImageDataset(split.train, model.transform)
    model.extractor  # load the weights before timing
    start = time.perf_counter()
    model.fit(train, batch_size=args.batch_size, progress=False)
    fit_s = time.perf_counter() - start
    rss_fit = peak_rss_mb()
    test = ImageDataset(split.test, model.transform)
    scores, predict_ms = score_test_split(model, test, args.batch_size)
    auc = float(auroc(test.labels, scores))
    row = {
        "case": f"augmented {args.n}" if args.n else "baseline (ordinary split)",
        "crop": args.crop if args.n else None, "flips": args.flips if args.n else None,
        "n_images": len(train), "image_size": IMAGE_SIZE, "coreset_ratio": args.ratio,
        "bank_dtype": args.bank_dtype, "max_patches_in_memory": args.max_patches, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "fit_s": fit_s, "fit_ms_per_image": 1000 * fit_s / len(train),
        "peak_rss_after_imports_mb": rss_imports, "peak_rss_fit_mb": rss_fit, "peak_rss_mb": peak_rss_mb(),
        "bank_rows": int(model.memory_bank_.shape[0]),
        "bank_mb": model.memory_bank_.numel() * model.memory_bank_.element_size() / 2**20,
        "image_auroc": auc, "predict_ms": predict_ms, "coreset": model.coreset_info_,
        "test_labels": [int(x) for x in test.labels], "test_scores": [float(x) for x in scores],
        "load_avg_1min_at_end": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(row), flush=True)


def run_child(n: int, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n), "--ratio", str(args.ratio),
               "--batch-size", str(args.batch_size), "--bank-dtype", args.bank_dtype,
               "--max-patches", str(args.max_patches), "--crop", *map(str, args.crop)]
    command += ["--flips"] if args.flips else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"child N={n} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    with out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if not k.startswith("test_")}), flush=True)
    return row


def table(out: Path) -> None:
    """Markdown table of the latest run per (N, augmentation), with DeLong's test against the baseline."""
    from vadkit.metrics.paired import delong_test

    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    latest = {(r["coreset_ratio"], r["n_images"], str(r.get("crop")), r.get("flips"), r["case"]): r
              for r in rows if "test_scores" in r}
    baseline = next((r for r in reversed(rows) if r["case"].startswith("baseline") and "test_scores" in r), None)
    print("| training set | crop / flips | fit | peak RSS (fit) | bank rows | reduces | image AUROC | vs baseline "
          "(DeLong 95% CI, p) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in sorted(latest.values(), key=lambda r: (not r["case"].startswith("baseline"), r["n_images"])):
        versus = "—"
        if baseline is not None and row is not baseline and row["test_labels"] == baseline["test_labels"]:
            test = delong_test(baseline["test_labels"], baseline["test_scores"], row["test_scores"])
            versus = f"{test.difference:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}], p = {test.p_value:.2g}"
        augmentation = "—" if row.get("crop") is None else f"{row['crop'][0]:g}–{row['crop'][1]:g} / " + (
            "yes" if row["flips"] else "no")
        print(f"| {row['case']} ({row['n_images']:,} images, {row['coreset']['patches']:,} patches, coreset "
              f"{row['coreset_ratio']:.1%}) | {augmentation} | {row['fit_s'] / 60:.1f} min | "
              f"{row['peak_rss_fit_mb'] / 1024:.2f} GB | {row['bank_rows']:,} | {row['coreset']['reduces']} | "
              f"{row['image_auroc']:.4f} | {versus} |")


def plot(out: Path, png: Path) -> None:
    """Peak RSS (fit) vs N from the results file: the latest row per N at each (ratio, dtype, buffer, crop)."""
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[(row["coreset_ratio"], row["bank_dtype"], row["max_patches_in_memory"], str(row.get("crop")),
                row.get("flips"), row["n_images"], row["case"].startswith("baseline"))] = row
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    series: dict[tuple, list[dict]] = {}
    for key, row in latest.items():
        if not key[-1]:
            series.setdefault(key[:5], []).append(row)
    for number, ((ratio, dtype, buffer, _, _), points) in enumerate(sorted(series.items(), reverse=True)):
        points.sort(key=lambda r: r["n_images"])
        n = [p["n_images"] for p in points]
        axes.plot(n, [p["peak_rss_fit_mb"] / 1024 for p in points], "o-",
                  label=f"streaming PatchCore, coreset {ratio:.1%}, buffer {buffer / 2**20:.0f}Mi patches")
        for p in points:
            axes.annotate(f"{p['peak_rss_fit_mb'] / 1024:.1f} GB, {p['fit_s'] / 60:.1f} min",
                          (p["n_images"], p["peak_rss_fit_mb"] / 1024), textcoords="offset points",
                          xytext=(-60, 8 - 22 * number) if p["n_images"] > 20000 else (4, 8 - 22 * number),
                          fontsize=8)
    baselines = [row for key, row in latest.items() if key[-1]]
    for row in baselines:
        axes.plot([row["n_images"]], [row["peak_rss_fit_mb"] / 1024], "s", color="black",
                  label=f"baseline: ordinary split ({row['n_images']} images, not streamed)")
    if baselines and series:  # the non-streaming fit holds every patch: its RSS above the import floor is linear
        base = baselines[-1]
        per_image = (base["peak_rss_fit_mb"] - base["peak_rss_after_imports_mb"]) / base["n_images"] / 1024
        n = sorted({base["n_images"], *(p["n_images"] for points in series.values() for p in points)})
        axes.plot(n, [base["peak_rss_after_imports_mb"] / 1024 + x * per_image for x in n], ":", color="grey",
                  label="without streaming (baseline's GB per image, extrapolated)")
    axes.set_xlabel("training images (224x224, 784 patches each)")
    axes.set_ylabel("peak RSS during fit (GB)")
    axes.axhline(24, color="red", linewidth=0.8, linestyle="--", label="24 GB machine")
    axes.set_ylim(0, 36)
    axes.legend(fontsize=7, loc="upper left")
    axes.set_title("PatchCore (mobilenet_v2) fit memory vs training-set size", fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    print(f"wrote {png}")


def quality(args: argparse.Namespace) -> None:
    """Streaming vs exact greedy k-center on a subsample: coverage radius and image AUROC."""
    import numpy as np
    import torch

    from vadkit.data import ImageDataset, load_split
    from vadkit.models.patchcore import PatchCore
    from vadkit.ops.coreset import greedy_kcenter, start_index
    from vadkit.ops.knn import NearestNeighbours
    from vadkit.ops.patch_features import flatten_patches
    from vadkit.ops.streaming_coreset import StreamingKCenter

    split = load_split("mtd", MTD)
    model = PatchCore(image_size=IMAGE_SIZE)
    per_image = (IMAGE_SIZE // 8) ** 2
    n_images = min(len(split.train), -(-args.subsample // per_image))
    chosen_images = sorted(np.random.default_rng(0).choice(len(split.train), n_images, replace=False).tolist())
    train = ImageDataset([split.train[i] for i in chosen_images], model.transform)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size)
    features = torch.cat([flatten_patches(model.embed(batch["image"])).half() for batch in loader])
    points = features.float()
    test = ImageDataset(split.test, model.transform)
    out = RESULTS / "streaming_quality.jsonl"

    def coverage(selected: torch.Tensor) -> float:
        distances, _ = NearestNeighbours(points[selected].numpy()).search(points.numpy(), k=1)
        return float(distances.max())

    def bank_auroc(selected: torch.Tensor) -> float:
        model.memory_bank_, model._index, model.fitted = points[selected].contiguous(), None, True
        return image_auroc(model, test, args.batch_size)[0]

    for ratio in args.quality_ratios:
        k = int(round(ratio * len(points)))
        start = time.perf_counter()
        exact = greedy_kcenter(points, k, start=start_index(points), search="exact", progress=False)
        exact_s = time.perf_counter() - start
        start = time.perf_counter()
        selector = StreamingKCenter(k, buffer_rows=max(len(points) // 10, 1), search="auto", progress=False)
        for i in range(0, len(features), per_image * args.batch_size):
            selector.add(features[i:i + per_image * args.batch_size])
        result = selector.finish()
        stream_s = time.perf_counter() - start
        exact_radius, stream_radius = coverage(exact), coverage(result.indices)
        row = {
            "case": "quality", "patches": len(points), "images": n_images, "coreset_ratio": ratio, "k": k,
            "buffer_rows": result.buffer_capacity, "exact_s": exact_s, "streaming_s": stream_s,
            "exact_radius": exact_radius, "streaming_radius": stream_radius,
            "radius_ratio": stream_radius / exact_radius, "reduces": result.reduces, "radii": result.radii,
            "certified_bound": result.radius_bound, "buffered": result.rows_buffered,
            "exact_auroc": bank_auroc(exact), "streaming_auroc": bank_auroc(result.indices),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bank-dtype", default="float32")
    parser.add_argument("--max-patches", type=int, default=2**21)
    parser.add_argument("--crop", type=float, nargs=2, default=[0.95, 1.0], metavar=("MIN", "MAX"),
                        help="crop side as a fraction of the source side (AugmentedDataset)")
    parser.add_argument("--flips", action="store_true", help="random flips in the augmented sets")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--plot", action="store_true", help="only redraw the plot")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--subsample", type=int, default=100_000)
    parser.add_argument("--quality-ratios", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not MTD.is_dir():
        sys.exit(f"dataset not found: {MTD}")
    if args.child:
        return child(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "streaming.jsonl"
    if args.quality:
        return quality(args)
    if not args.plot:
        if not args.no_baseline:
            run_child(0, args, out)
        for n in args.sizes:
            run_child(n, args, out)
    plot(out, RESULTS / "streaming_memory.png")
    table(out)


if __name__ == "__main__":
    main()
