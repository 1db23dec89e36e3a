"""Feature compression over an IoT link: bytes per image against accuracy, and end-to-end time per link speed.

    .venv/bin/python benchmarks/bench_codecs.py [--datasets battery_weld magnetic_tile] [--threads 2]

PatchCore (MobileNetV2, defaults) is fitted on the dataset's training normals, then split: the device runs
``PatchCoreGraph.embed`` (backbone + locally aware features, 128 x 32 x 32 at 256 px), encodes the features
with each codec of :mod:`vadkit.edge.codecs`, the server decodes them and runs ``PatchCoreGraph.score``
(memory-bank search, map, eq. 7 score). The baseline sends the image instead (JPEG at the model's 256 px
input; the server then runs the whole graph). Both ends are this machine's CPU, timed per image at batch 1;
the link time is computed, ``payload bytes x 8 / bandwidth``, for the bandwidths given (defaults: 250 kbit/s,
a LoRa-class / NB-IoT uplink; 1 Mbit/s, LTE-M; 10 Mbit/s, a busy Wi-Fi). PQ codebooks are trained on the
memory bank (normal training features), which both ends hold.

Per codec: bytes per image (mean), image AUROC, pixel AUROC and pixel F1-max (vadkit's metrics) over the
test split, device / encode / decode / server milliseconds per image (medians), end-to-end milliseconds per
image at each bandwidth. Writes ``benchmarks/results/codecs/<dataset>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_model import DATASETS

BANDWIDTHS = (250e3, 1e6, 10e6)


def codecs(bank: np.ndarray) -> list:
    from vadkit.edge.codecs import Float16Codec, JpegCodec, PQCodec, UniformCodec

    return [None, Float16Codec(), UniformCodec(8), UniformCodec(4), PQCodec(32, 8).fit(bank),
            PQCodec(16, 8).fit(bank), PQCodec(8, 8).fit(bank), JpegCodec(95), JpegCodec(75), JpegCodec(50)]


def run(dataset: str, out: Path) -> list[dict]:
    import torch
    from PIL import Image

    import vadkit
    from vadkit.data import ImageDataset, load_image, load_split
    from vadkit.metrics import auroc
    from vadkit.metrics.pixel import pixel_auroc, pixel_f1_max

    layout, root = DATASETS[dataset]
    split = load_split(layout, root)
    model = vadkit.create_model("patchcore").fit(split.train, progress=False)
    graph = model.inference_module().eval()
    test = ImageDataset(split.test, model.transform)
    labels = np.array([s.label for s in split.test])
    masks = test.masks_array() if test.has_masks else None
    size = tuple(model.input_size_)
    bank = model.memory_bank_.float().numpy()
    # the device half once per image (the same for every feature codec): features and their time
    embedded, device_ms = [], []
    with torch.inference_mode():
        for sample in split.test:
            x = torch.from_numpy(model.transform.array(load_image(sample.image_path)))[None]
            t0 = time.perf_counter()
            embedded.append(graph.embed(x)[0].numpy())
            device_ms.append((time.perf_counter() - t0) * 1e3)
    rows = []
    for codec in codecs(bank):
        name = "raw float32" if codec is None else codec.name
        scores, maps, sizes = [], [], []
        times = {"device": [], "encode": [], "decode": [], "server": []}
        for index, sample in enumerate(split.test):
            with torch.inference_mode():
                if codec is not None and codec.kind == "image":
                    t0 = time.perf_counter()
                    pixels = model.transform.display_array(load_image(sample.image_path))  # resized to 256 px
                    t1 = time.perf_counter()
                    payload = codec.encode(pixels)
                    t2 = time.perf_counter()
                    received = codec.decode(payload)
                    t3 = time.perf_counter()
                    x = torch.from_numpy(model.transform.array(Image.fromarray(received)))[None]
                    score, anomaly_map = graph(x)
                else:
                    features = embedded[index]
                    t1 = time.perf_counter()
                    t0 = t1 - device_ms[index] / 1e3
                    payload = features.tobytes() if codec is None else codec.encode(features)
                    t2 = time.perf_counter()
                    received = features if codec is None else codec.decode(payload)
                    t3 = time.perf_counter()
                    score, anomaly_map = graph.score(torch.from_numpy(np.ascontiguousarray(received))[None], size)
                t4 = time.perf_counter()
            for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key].append(seconds * 1e3)
            scores.append(float(score[0]))
            maps.append(anomaly_map[0].numpy())
            sizes.append(len(payload))
        maps = np.stack(maps)
        ms = {key: float(np.median(values)) for key, values in times.items()}
        compute = sum(ms.values())
        row = {"dataset": dataset, "codec": name, "bytes": float(np.mean(sizes)),
               "image_auroc": auroc(labels, np.array(scores)),
               "pixel_auroc": None if masks is None else pixel_auroc(masks, maps),
               "pixel_f1_max": None if masks is None else pixel_f1_max(masks, maps),
               **{f"{key}_ms": value for key, value in ms.items()},
               **{f"end_to_end_ms_{int(bw / 1e3)}k": compute + float(np.mean(sizes)) * 8 / bw * 1e3
                  for bw in BANDWIDTHS}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dataset}.json").write_text(json.dumps(rows, indent=2))
    return rows


def table(rows: list[dict]) -> str:
    bw = [f"end_to_end_ms_{int(b / 1e3)}k" for b in BANDWIDTHS]
    head = ("| dataset | payload | bytes/image | image AUROC | pixel AUROC | pixel F1-max | device ms | encode ms | "
            "decode ms | server ms | " + " | ".join(f"e2e ms @ {int(b / 1e3)} kbit/s" for b in BANDWIDTHS) + " |")
    lines = [head, "|" + "---|" * (10 + len(BANDWIDTHS))]

    def f(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for r in rows:
        lines.append(f"| {r['dataset']} | {r['codec']} | {r['bytes']:,.0f} | {f(r['image_auroc'])} | "
                     f"{f(r['pixel_auroc'])} | {f(r['pixel_f1_max'])} | {r['device_ms']:.1f} | {r['encode_ms']:.2f} | "
                     f"{r['decode_ms']:.2f} | {r['server_ms']:.1f} | " + " | ".join(f"{r[k]:,.0f}" for k in bw) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """The rate-accuracy plot: bytes per image (log scale) against image AUROC and pixel F1-max, one line per
    family of codecs (feature codecs by rate, JPEG by quality) and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = {"features": lambda c: not c.startswith("jpeg"), "JPEG of the image": lambda c: c.startswith("jpeg")}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, key, label in ((axes[0], "image_auroc", "image AUROC"), (axes[1], "pixel_f1_max", "pixel F1-max")):
        for dataset in sorted({r["dataset"] for r in rows}):
            for family, member in families.items():
                points = sorted((r["bytes"], r[key], r["codec"]) for r in rows
                                if r["dataset"] == dataset and member(r["codec"]) and r[key] is not None)
                if not points:
                    continue
                x, y, names = zip(*points)
                axis.plot(x, y, marker="o" if family == "features" else "s", label=f"{dataset}: {family}")
                for xi, yi, name in points:
                    axis.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel("bytes sent per image")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["battery_weld", "magnetic_tile"], choices=sorted(DATASETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "codecs")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent.parent / "docs" / "figures" /
                        "codecs_rate_accuracy.png", help="where the rate-accuracy plot goes")
    parser.add_argument("--replot", action="store_true", help="redraw the table and plot from --out, run nothing")
    args = parser.parse_args()
    if args.replot:
        rows = [row for dataset in args.datasets if (args.out / f"{dataset}.json").exists()
                for row in json.loads((args.out / f"{dataset}.json").read_text())]
        print(table(rows))
        plot(rows, args.plot)
        return
    from vadkit.threads import set_threads

    set_threads(args.threads)
    rows = [row for dataset in args.datasets for row in run(dataset, args.out)]
    print(table(rows))
    plot(rows, args.plot)


if __name__ == "__main__":
    main()
