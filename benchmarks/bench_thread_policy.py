"""OpenMP's wait policy, idle and under load: PatchCore predict and a bare MobileNetV2 forward.

    .venv/bin/python benchmarks/bench_thread_policy.py [--load 0 3] [--threads 1 2] [--rounds 3]

``import vadkit`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose (``vadkit/threads.py``): OpenMP threads
with no work sleep instead of spinning. This measures what that buys and costs. Each cell runs in a fresh
process with ``OMP_WAIT_POLICY`` set to PASSIVE, left at libgomp's default (spin for a while between parallel
regions, then sleep) or ACTIVE (spin) and ``--threads`` torch/faiss threads; ``--load N`` starts N busy-looping processes
beside it (other jobs on a shared machine), stopped after the cell.

In each cell: PatchCore (mobilenet_v2, 256 px, coreset 1%) fitted on battery_weld's training images, then
predict ms per image over its 128 test images (batch 8; median of ``--rounds`` passes after a warm-up: torch's
backbone and faiss' search take turns, the case the policy is for), and a bare MobileNetV2 forward (batch 8,
channels-last, up to features.13) over the same images. Results: ``benchmarks/results/thread_policy.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_seeds import DATASETS  # noqa: E402


def measure(threads: int, rounds: int) -> dict:
    import torch

    from vadkit.backbones import create_extractor
    from vadkit.data import ImageDataset, load_split
    from vadkit.models import create_model
    from vadkit.threads import set_threads

    set_threads(threads)
    layout, root = DATASETS["battery_weld"]
    split = load_split(layout, root)
    model = create_model("patchcore", backbone="mobilenet_v2", image_size=256, coreset_ratio=0.01)
    model.fit(ImageDataset(split.train, model.transform), progress=False)
    test = ImageDataset(split.test, model.transform)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    extractor = create_extractor("mobilenet_v2", ["features.13"], channels_last=True)

    def timed(work) -> float:
        work()  # warm-up
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times) / len(images)

    def forward():
        with torch.inference_mode():
            for batch in images.split(8):
                extractor(batch)

    return {"predict_ms_per_image": timed(lambda: model.predict(images, batch_size=8)),
            "forward_ms_per_image": timed(forward)}


#: "" leaves libgomp at its default (spin a while, then sleep): an empty value is ignored by libgomp (with a
#: warning on stderr), and ``import vadkit`` keeps any value the user set, the empty one included
POLICIES = ("PASSIVE", "", "ACTIVE")


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", nargs="+", type=int, default=[0, 3], help="busy processes beside each cell")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=2, type=int, metavar=("THREADS", "ROUNDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    rows = []
    for load in args.load:
        for threads in args.threads:
            for policy in POLICIES:
                spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(load)]
                for process in spinners:
                    process.start()
                try:
                    out = subprocess.run([sys.executable, __file__, "--one", str(threads), str(args.rounds)],
                                         env={**os.environ, "OMP_WAIT_POLICY": policy}, check=True,
                                         capture_output=True, text=True)
                finally:
                    for process in spinners:
                        process.terminate()
                row = {"load": load, "threads": threads, "policy": policy or "libgomp default",
                       **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "thread_policy.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
