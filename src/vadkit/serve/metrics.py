"""The counters behind ``GET /metrics``, in Prometheus' text format."""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

import numpy as np

#: recent requests the latency quantiles of /metrics are computed over
LATENCY_WINDOW = 1024
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ERROR_REASONS = ("empty_upload", "too_large", "not_an_image", "prediction_failed", "unavailable", "busy")


class ServeMetrics:
    """Counters for ``GET /metrics``, written by hand in Prometheus' text format (no client library needed).

    Updated from the event loop only (the middleware, the handlers and the batching task all run there), so
    they need no lock."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter(dict.fromkeys(ERROR_REASONS, 0))
        self.images = 0
        self.batches = 0
        self.batch_sizes: Counter[int] = Counter()
        self.batch_seconds = 0.0
        self.latency_count = 0
        self.latency_sum = 0.0
        self.recent_latencies: deque[float] = deque(maxlen=window)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.images += size
        self.batches += 1
        self.batch_sizes[size] += 1
        self.batch_seconds += seconds

    def observe_latency(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_sum += seconds
        self.recent_latencies.append(seconds)

    def render(self, queue_depth: int) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{suffix} {_number(value)}" for suffix, value in samples)

        family("vadkit_serve_requests_total", "counter", "HTTP responses by route and status code.",
               [(f'{{path="{path}",code="{code}"}}', count) for (path, code), count in sorted(self.requests.items())])
        family("vadkit_serve_errors_total", "counter", "Refused or failed predictions by reason.",
               [(f'{{reason="{reason}"}}', count) for reason, count in sorted(self.errors.items())])
        family("vadkit_serve_images_predicted_total", "counter", "Images the model scored.", [("", self.images)])
        family("vadkit_serve_batches_total", "counter", "Batches the model ran.", [("", self.batches)])
        buckets = [(f'_bucket{{le="{edge}"}}', sum(n for size, n in self.batch_sizes.items() if size <= edge))
                   for edge in BATCH_SIZE_BUCKETS]
        family("vadkit_serve_batch_size", "histogram", "Images per batch the model ran.",
               [*buckets, ('_bucket{le="+Inf"}', self.batches), ("_sum", self.images), ("_count", self.batches)])
        family("vadkit_serve_batch_seconds", "summary", "Time the model took per batch.",
               [("_sum", self.batch_seconds), ("_count", self.batches)])
        recent = np.asarray(self.recent_latencies, dtype=np.float64)
        quantiles = [(f'{{quantile="{q}"}}', float(np.quantile(recent, q)) if recent.size else math.nan)
                     for q in (0.5, 0.99)]
        family("vadkit_serve_predict_latency_seconds", "summary",
               f"Successful /predict requests, upload received to response (quantiles: last {len(recent)} requests).",
               [*quantiles, ("_sum", self.latency_sum), ("_count", self.latency_count)])
        family("vadkit_serve_queue_depth", "gauge", "Images waiting for a batch.", [("", queue_depth)])
        return "\n".join(lines) + "\n"


def _number(value: float | int) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    return str(value)


def read_samples(text: str) -> dict[str, float]:
    """``GET /metrics``' text back as {sample name with its labels: value}, e.g.
    ``{'vadkit_serve_batches_total': 12.0, 'vadkit_serve_errors_total{reason="busy"}': 0.0, ...}``."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples
