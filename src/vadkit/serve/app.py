"""The HTTP app behind ``vadkit serve``: one model, concurrent requests batched together.

    from vadkit.serve import create_app
    app = create_app("bundle/")             # or "bottle.vad"; then: uvicorn.run(app, host="127.0.0.1", port=8000)

* ``POST /predict`` (multipart field ``file``; ``?heatmap=true`` adds the anomaly map as a PNG): score, label,
  threshold. ``GET /health``: the model being served. ``GET /metrics``: Prometheus text. ``/openapi.json``.
* Batching: a model computes a batch of 8 in far less than 8 times one image's time, and serving images one at
  a time would leave that on the table under load. Each request is decoded and preprocessed in a worker thread,
  then queued; one background task takes up to ``max_batch`` queued images (waiting at most ``max_wait_ms`` after
  the oldest arrived), runs them as one batch on a thread of its own (the event loop keeps answering), and
  hands each request its own row. A batch that fails fails its own requests (500 with the reason) and no others.
* Overload is bounded: at most ``max_queue`` images wait for a batch; the next request gets a 503 with
  ``Retry-After`` at once instead of an ever longer wait (and an ever larger queue in memory).
* Bad uploads are the client's problem, never the server's: empty (400), too many bytes or pixels (413), or
  not an image Pillow decodes from the formats accepted here (415) each get one message that names the upload
  and the fix, and the server keeps serving. Only PNG, JPEG, BMP, TIFF and WebP are decoded: Pillow's rarer
  plugins (EPS runs Ghostscript) are no attack surface worth offering to the network.
* Images are converted as vadkit converts files (:func:`vadkit.data.io.to_rgb`) and preprocessed by the model's
  own transform, so a served score is the score ``model.predict`` gives the same file.

What is served comes from :func:`load_predictor`: an exported bundle runs on :class:`vadkit.edge.Runtime`
(onnxruntime, no torch imported), a ``.vad`` file on the PyTorch model.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image
from pydantic import BaseModel, Field

from vadkit.errors import ParameterError
from vadkit.serve.batching import MicroBatcher, PredictionFailed, ServiceBusy, ServiceUnavailable
from vadkit.serve.metrics import ServeMetrics
from vadkit.serve.predictor import Predictor, load_predictor
from vadkit.serve.uploads import (DEFAULT_MAX_UPLOAD_BYTES, FORMATS_TEXT, UploadError, decode_upload, heatmap_png,
                                  shown_name)


def _require_multipart() -> None:
    """FastAPI reads uploads with python-multipart but only says so when a route is declared; say it on import,
    where the CLI turns it into its one-line "pip install 'vadkit[serve]'"."""
    import importlib.util

    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        raise ImportError("No module named 'python_multipart' (FastAPI needs python-multipart to read uploads)")


_require_multipart()

#: room for multipart framing and headers around the file, in the body limit checked before parsing
MULTIPART_SLACK_BYTES = 64 * 1024
ROUTES = ("/predict", "/health", "/metrics", "/openapi.json", "/docs", "/redoc")

#: a client told the server is busy retries after this many seconds
RETRY_AFTER_SECONDS = 1
#: images waiting for a batch before requests are refused (503): 8 full batches of the default size
DEFAULT_MAX_QUEUE = 64

class RequestGuard:
    """ASGI middleware around the app: counts every response by route and status code, and refuses a
    ``POST /predict`` body over ``max_body_bytes`` (413) before it is parsed (from Content-Length) or while it
    arrives (chunked bodies), so an oversized upload never fills the disk or memory."""

    def __init__(self, app, *, metrics: ServeMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    def _too_large(self) -> str:
        return (f"request body is larger than this server's upload limit ({_size(self.max_body_bytes)} with "
                "multipart framing); send a smaller image")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app fails before answering

        async def counted_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        limited = scope["method"] == "POST" and scope["path"] == "/predict"
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    self.metrics.errors["too_large"] += 1
                    raise HTTPException(413, self._too_large())  # FastAPI re-raises it from body parsing
            return message

        try:
            if limited and _content_length(scope) > self.max_body_bytes:
                self.metrics.errors["too_large"] += 1
                await JSONResponse({"detail": self._too_large()}, status_code=413)(scope, receive, counted_send)
                return
            await self.app(scope, limited_receive if limited else receive, counted_send)
        finally:
            path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded: no label per random path
            self.metrics.requests[(path, status)] += 1


def _content_length(scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class PredictionResponse(BaseModel):
    score: float = Field(description="Image anomaly score; higher is more anomalous.")
    label: int | None = Field(description="1 (anomalous) when score >= threshold, else 0; null for a model never "
                                          "calibrated.")
    threshold: float | None = Field(description="The model's calibrated image threshold (null: none).")
    method: str = Field(description="The anomaly detection method, e.g. patchcore.")
    width: int = Field(description="Width of the model input the image was resized to, and of the heatmap.")
    height: int = Field(description="Height of the model input the image was resized to, and of the heatmap.")
    heatmap_png: str | None = Field(description="With heatmap=true: the anomaly map as a base64 PNG (width x "
                                                "height, blue = normal to red = anomalous); else null.")
    heatmap_range: list[float] | None = Field(description="With heatmap=true: the map values [low, high] at the two "
                                                          "ends of the heatmap's colours; else null.")


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' while the model is being served.")
    method: str
    model: str = Field(description="The model file's or bundle folder's name.")
    input_size: list[int] = Field(description="[height, width] of the model input.")
    threshold: float | None
    pixel_threshold: float | None
    max_batch: int


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong, naming the upload, and the fix.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The upload is empty, or the body is not valid multipart."},
    413: {"model": ErrorResponse, "description": "The upload has more bytes or pixels than the server accepts."},
    415: {"model": ErrorResponse, "description": f"The upload is not a readable {FORMATS_TEXT} image."},
    500: {"model": ErrorResponse, "description": "The model failed on the batch this image was in."},
    503: {"model": ErrorResponse, "description": "The model is not being served (starting or shutting down), or "
                                                 "the queue is full (busy: retry after the Retry-After seconds)."},
}


def create_app(model_source: str | Path | Predictor, *, max_batch: int = 8, max_wait_ms: float = 5,
               max_queue: int = DEFAULT_MAX_QUEUE,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_image_pixels: int | None = None,
               threads: int | None = None) -> FastAPI:
    """The FastAPI app serving ``model_source`` (see :func:`load_predictor`; a :class:`Predictor` is used as is).

    Args:
        max_batch: most images the model runs at once.
        max_queue: most images waiting for a batch; a request beyond that gets a 503 with Retry-After.
        max_wait_ms: longest a request waits for others to share its batch.
        max_upload_bytes: largest upload accepted (413 beyond).
        max_image_pixels: largest width x height decoded (413 beyond; default: Pillow's ``MAX_IMAGE_PIXELS``).
        threads: the model's threads (see :func:`load_predictor`).
    """
    from vadkit import __version__

    if isinstance(max_batch, bool) or not (isinstance(max_batch, int) and max_batch >= 1):
        raise ParameterError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if isinstance(max_queue, bool) or not (isinstance(max_queue, int) and max_queue >= 1):
        raise ParameterError(f"max_queue must be an integer >= 1, got {max_queue!r}")
    if not (isinstance(max_wait_ms, (int, float)) and math.isfinite(max_wait_ms) and max_wait_ms >= 0):
        raise ParameterError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
    if isinstance(max_upload_bytes, bool) or not (isinstance(max_upload_bytes, int) and max_upload_bytes >= 1):
        raise ParameterError(f"max_upload_bytes must be an integer >= 1, got {max_upload_bytes!r}")
    max_pixels = Image.MAX_IMAGE_PIXELS if max_image_pixels is None else max_image_pixels
    predictor = model_source if isinstance(model_source, Predictor) else load_predictor(model_source, threads=threads)
    metrics = ServeMetrics()
    batcher = MicroBatcher(predictor, max_batch=max_batch, max_wait_s=max_wait_ms / 1000,
                           max_queue=max_queue, metrics=metrics)
    height, width = predictor.input_size

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="vadkit serve", version=__version__, lifespan=lifespan,
                  description=f"Visual anomaly detection with a {predictor.method} model ({predictor.name}): "
                              "POST an image to /predict for its anomaly score, label and (optionally) heatmap.")
    app.state.predictor, app.state.batcher, app.state.metrics = predictor, batcher, metrics
    app.add_middleware(RequestGuard, metrics=metrics, max_body_bytes=max_upload_bytes + MULTIPART_SLACK_BYTES)

    def refuse(status: int, reason: str, message: str) -> HTTPException:
        metrics.errors[reason] += 1
        return HTTPException(status, message)

    @app.post("/predict", response_model=PredictionResponse, responses=ERROR_RESPONSES,
              summary="Anomaly score, label and optional heatmap of one uploaded image")
    async def predict(file: UploadFile = File(description=f"The image: {FORMATS_TEXT}, any size (it is resized "
                                                          "to the model's input)."),
                      heatmap: bool = Query(False, description="Also return the anomaly map as a PNG.")
                      ) -> PredictionResponse:
        started = time.perf_counter()
        shown = shown_name(file.filename)
        data = await file.read(max_upload_bytes + 1)
        if not data:
            raise refuse(400, "empty_upload", f"upload {shown} is empty: send the image file's bytes in the "
                                              "multipart field 'file'")
        if len(data) > max_upload_bytes:
            raise refuse(413, "too_large", f"upload {shown} is larger than this server's limit of "
                                           f"{_size(max_upload_bytes)}; send a smaller image")
        try:
            image = await asyncio.to_thread(decode_upload, data, file.filename, max_pixels=max_pixels)
        except UploadError as error:
            raise refuse(error.status, error.reason, error.message) from None
        array = await asyncio.to_thread(predictor.preprocess, image)
        try:
            score, anomaly_map = await batcher.predict(array)
        except ServiceUnavailable as error:
            raise refuse(503, "unavailable", str(error)) from None
        except ServiceBusy as error:
            metrics.errors["busy"] += 1
            raise HTTPException(503, str(error), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except PredictionFailed as error:
            raise HTTPException(500, str(error)) from None
        score = float(score)
        if not math.isfinite(score):
            raise refuse(500, "prediction_failed", f"the model gave a non-finite score ({score}) for upload {shown}")
        threshold = predictor.threshold
        label = None if threshold is None else int(np.float64(score) >= np.float64(threshold))
        png, scale = None, None
        if heatmap:
            anomaly_map = predictor.to_evaluation_grid(anomaly_map, (image.height, image.width))
            png, scale = await asyncio.to_thread(heatmap_png, anomaly_map, predictor.pixel_threshold)
        metrics.observe_latency(time.perf_counter() - started)
        return PredictionResponse(score=score, label=label, threshold=threshold, method=predictor.method,
                                  width=width, height=height, heatmap_png=png, heatmap_range=scale)

    @app.get("/health", response_model=HealthResponse, responses={503: ERROR_RESPONSES[503]},
             summary="The model being served (503 until it is ready)")
    async def health() -> HealthResponse:
        if not batcher.running:
            raise HTTPException(503, "the model is not being served yet (starting) or any more (shutting down)")
        return HealthResponse(status="ok", method=predictor.method, model=predictor.name, input_size=[height, width],
                              threshold=predictor.threshold, pixel_threshold=predictor.pixel_threshold,
                              max_batch=max_batch)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Counters in Prometheus' text format")
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(batcher.queue_depth),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
