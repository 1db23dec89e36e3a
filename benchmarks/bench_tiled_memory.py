"""Does a tiled model's prediction memory follow the tiles or the image? Peak RSS of one prediction at two sizes.

    .venv/bin/python benchmarks/bench_tiled_memory.py [--tile 256] [--sizes 1000x1000 3000x4000]

A tiled PatchCore-mobilenet_v2 (tile 256, overlap 0.25, ``tile_batch`` 16) is fitted once, on two battery_weld
training images at the first size. Each size then runs in a fresh process: the same fitted tile model inside a
wrapper of that whole-image size predicts one battery_weld test image resized to it. Reported per size: the tiles
per image, the process's RSS before the prediction (model loaded, image decoded), the peak during it, the
difference, the seconds, and the bytes the image itself takes as a float32 tensor plus its float32 map (which
every method must hold: the floor). Writes ``benchmarks/results/tiled_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "battery_weld" / "welding"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def measure(model_file: str, size: str, image: str) -> dict:
    import torch

    import vadkit
    from vadkit.models.tiled import TiledModel

    torch.set_num_threads(2)
    fitted = vadkit.load(model_file)
    model = TiledModel(**{**fitted.get_params(), "image_size": size})
    model.load_state_dict({**fitted.state_dict(), "input_size_": None})
    model.fitted = True
    dataset = model.as_dataset([image])
    images = dataset[0]["image"][None]
    model.input_size_ = list(images.shape[-2:])
    with open("/proc/self/clear_refs", "w") as refs:  # reset the peak (VmHWM) to the current RSS
        refs.write("5")
    before = rss_mb()
    started = time.perf_counter()
    model.predict(images, progress=False)
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    height, width = model.input_size_
    return {"size": size, "tiles": len(model.positions), "rss_before_mb": round(before, 1), "peak_mb": round(peak, 1),
            "predict_delta_mb": round(peak - before, 1), "seconds": round(seconds, 2),
            "image_and_map_floor_mb": round(height * width * 4 * 4 / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--sizes", nargs="+", default=["1000x1000", "3000x4000"])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*args.worker)))
        return
    import vadkit
    from vadkit.data import load_split

    split = load_split("mvtec", DATA)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model = vadkit.create_model("tiled", method="patchcore", method_params={"backbone": "mobilenet_v2"},
                                    image_size=args.sizes[0], tile=args.tile, overlap=0.25)
        model.fit(split.train[:2], progress=False)
        model_file = str(model.save(Path(folder) / "tiled.vad"))
        image = str(next(s.image_path for s in split.test if s.label == 1))
        for size in args.sizes:
            done = subprocess.run([sys.executable, __file__, "--worker", model_file, size, image], check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1])
    out = HERE / "results" / "tiled_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tile": args.tile, "tile_batch": 16, "max_rss_parent_mb":
                               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
