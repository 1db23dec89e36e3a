"""Load test of `vadkit serve` on loopback: throughput, client latency and the batches the server formed.

    .venv/bin/python benchmarks/bench_serve.py MODEL IMAGES [--requests 200] [--concurrency 8] [--max-seconds 60]
        [--max-batch 8] [--max-wait-ms 5] [--threads N] [--heatmap] [--out FILE.json]

MODEL is a .vad file or a folder written by `vadkit export`; IMAGES a folder of images (searched recursively),
read into memory once and sent round-robin. The server is started as a user starts it
(``python -m vadkit.cli serve MODEL --host 127.0.0.1 --port P``, P a free port), the script waits for
``GET /health``, sends a few untimed warm-up requests, then ``--concurrency`` client threads (one httpx
connection each, kept alive) send ``--requests`` uploads in total, stopping early after ``--max-seconds``.

Reported (printed as JSON, and written to ``--out``, default benchmarks/results/serve/<model>.json): throughput
(successful images per second of wall time), client-side latency p50 / p99 / mean in ms (request sent to
response read, successful requests), errors by status code, and the server's mean batch size over the timed
requests (from ``/metrics``). Client and server share the machine's cores, so on a small machine the figures
include the client's own cost; compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, port: int, args, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "vadkit.cli", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_until_healthy(base: str, server: subprocess.Popen, timeout: float, log_path: Path) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}:\n{log_path.read_text()}")
        try:
            answer = httpx.get(f"{base}/health", timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /health within {timeout:.0f} s:\n{log_path.read_text()}")


def load(base: str, images: list[tuple[str, bytes]], args) -> dict:
    """Send the timed requests from ``args.concurrency`` threads; latencies in seconds, statuses, wall time."""
    import httpx

    lock = threading.Lock()
    next_index = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    params = {"heatmap": "true"} if args.heatmap else {}

    def client() -> None:
        nonlocal next_index
        with httpx.Client(base_url=base, timeout=60) as session:
            while True:
                with lock:
                    if next_index >= args.requests or time.perf_counter() > deadline:
                        return
                    name, content = images[next_index % len(images)]
                    next_index += 1
                sent = time.perf_counter()
                try:
                    answer = session.post("/predict", params=params, files={"file": (name, content)})
                    status = str(answer.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                took = time.perf_counter() - sent
                with lock:
                    statuses[status] += 1
                    if status == "200":
                        latencies.append(took)

    started = time.perf_counter()
    deadline = started + args.max_seconds
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "statuses": statuses, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a .vad file or a bundle folder written by `vadkit export`")
    parser.add_argument("images", type=Path, help="folder of images to send (searched recursively)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests in total (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--max-seconds", type=float, default=60, help="stop sending after this long (default 60)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--threads", type=int, default=None, help="the server's model threads")
    parser.add_argument("--heatmap", action="store_true", help="ask for the heatmap PNG with every prediction")
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests first (default 4)")
    parser.add_argument("--startup-timeout", type=float, default=120)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.max_seconds <= 0:
        parser.error("--requests and --concurrency must be >= 1 and --max-seconds > 0")

    import httpx

    from vadkit.data import list_images
    from vadkit.serve.metrics import read_samples

    images = [(path.name, path.read_bytes()) for path in list_images(args.images, recursive=True)]
    if not images:
        raise SystemExit(f"no images in {args.images}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="bench_serve_")) / "server.log"
    with open(log_path, "w") as log:
        server = start_server(args.model, port, args, log)
        try:
            started = time.perf_counter()
            health = wait_until_healthy(base, server, args.startup_timeout, log_path)
            startup_seconds = time.perf_counter() - started
            for name, content in images[:args.warmup]:
                httpx.post(f"{base}/predict", files={"file": (name, content)}, timeout=60).raise_for_status()
            before = read_samples(httpx.get(f"{base}/metrics").text)
            run = load(base, images, args)
            after = read_samples(httpx.get(f"{base}/metrics").text)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    latencies_ms = np.asarray(run["latencies"]) * 1e3
    ok = len(latencies_ms)
    batches = after["vadkit_serve_batches_total"] - before["vadkit_serve_batches_total"]
    batched_images = after["vadkit_serve_images_predicted_total"] - before["vadkit_serve_images_predicted_total"]
    result = {
        "model": str(args.model), "method": health["method"], "input_size": health["input_size"],
        "images_folder": str(args.images), "distinct_images": len(images),
        "requests": sum(run["statuses"].values()), "ok": ok,
        "errors": {status: n for status, n in run["statuses"].items() if status != "200"},
        "seconds": round(run["seconds"], 3), "stopped_by_time": sum(run["statuses"].values()) < args.requests,
        "throughput_images_per_s": round(ok / run["seconds"], 2),
        "latency_ms": {"p50": round(float(np.percentile(latencies_ms, 50)), 2) if ok else None,
                       "p99": round(float(np.percentile(latencies_ms, 99)), 2) if ok else None,
                       "mean": round(float(latencies_ms.mean()), 2) if ok else None},
        "server_mean_batch_size": round(batched_images / batches, 2) if batches else None,
        "server_batches": int(batches), "server_startup_s": round(startup_seconds, 2),
        "config": {"concurrency": args.concurrency, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                   "threads": args.threads, "heatmap": args.heatmap},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / "serve" / f"{args.model.stem or args.model.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
