"""Micro-batching: concurrent requests' images run through the model together.

A model computes a batch of 8 in far less than 8 times one image's time, and serving images one at a time would
leave that on the table under load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from vadkit.serve.metrics import ServeMetrics
from vadkit.serve.predictor import Predictor


class PredictionFailed(Exception):
    """The model failed on the batch a request was in (the request gets a 500 with this message)."""


class ServiceUnavailable(Exception):
    """The batching task is not running: the app is starting, stopping, or was served without its lifespan."""


class ServiceBusy(Exception):
    """The queue holds ``max_queue`` images already: the client should retry shortly (503 with Retry-After)."""


@dataclass
class _Job:
    array: np.ndarray
    future: asyncio.Future
    queued_at: float


class MicroBatcher:
    """Collects preprocessed images from concurrent requests into batches for one model.

    One task takes the queued images, up to ``max_batch``, once the batch is full or ``max_wait_s`` after the
    oldest one arrived (so a lone request waits at most that long, and under load nobody waits for more: the
    queue fills while the previous batch runs). The model runs on a single thread of its own, so batches never
    compete with each other for the cores, and the event loop keeps accepting and decoding uploads meanwhile.
    At most ``max_queue`` images wait: beyond that a request is refused at once (:class:`ServiceBusy`), because
    under sustained overload an unbounded queue only turns into ever longer waits and ever more memory.
    """

    def __init__(self, predictor: Predictor, *, max_batch: int, max_wait_s: float, max_queue: int,
                 metrics: ServeMetrics) -> None:
        self.predictor, self.max_batch, self.max_wait_s, self.metrics = predictor, max_batch, max_wait_s, metrics
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the batching task, after one warm-up batch (a model's first call allocates and loads what it
        needs; better at startup than in the first client's latency, and a model that cannot run fails here)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vadkit-model")
        height, width = self.predictor.input_size
        warm_up = np.zeros((1, 3, height, width), np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.run, warm_up)
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._work(), name="vadkit-serve-batcher")

    async def stop(self) -> None:
        """Stop the task; requests still waiting get a 503."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for job in [*self._running, *self._pending]:
            if not job.future.done():
                job.future.set_exception(ServiceUnavailable("the server is shutting down; send the image again"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def predict(self, array: np.ndarray) -> tuple[np.float32, np.ndarray]:
        """One preprocessed image -> its score and map, once the batch it joins has run."""
        if not self.running:
            raise ServiceUnavailable("the model is not being served (the app is starting or stopping, or runs "
                                     "without its lifespan: serve it with uvicorn, or enter TestClient with `with`)")
        if len(self._pending) >= self.max_queue:
            raise ServiceBusy(f"the server is busy ({len(self._pending)} images are waiting for the model); "
                              "send the image again shortly")
        loop = asyncio.get_running_loop()
        job = _Job(array, loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    async def _work(self) -> None:
        while True:
            await self._run(await self._collect())

    async def _collect(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._pending[0].queued_at + self.max_wait_s
        while len(self._pending) < self.max_batch and loop.time() < deadline:
            self._arrived.clear()
            try:  # waiting on the event, not the queue: a timeout here can never lose a job
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        jobs = []
        while self._pending and len(jobs) < self.max_batch:
            job = self._pending.popleft()
            if not job.future.done():  # a client that went away has cancelled its future
                jobs.append(job)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        self._running = jobs
        started = time.perf_counter()
        try:
            batch = np.stack([job.array for job in jobs])
            scores, maps = await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.run, batch)
            if len(scores) != len(jobs) or len(maps) != len(jobs):
                raise RuntimeError(f"the model returned {len(scores)} scores and {len(maps)} maps for {len(jobs)} "
                                   "images")
        except Exception as error:
            self.metrics.errors["prediction_failed"] += len(jobs)
            message = (f"prediction failed on a batch of {len(jobs)} image(s): {type(error).__name__}: "
                       f"{str(error)[:300]}")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(PredictionFailed(message))
            return
        finally:
            self._running = []
        self.metrics.observe_batch(len(jobs), time.perf_counter() - started)
        for job, score, anomaly_map in zip(jobs, scores, maps):
            if not job.future.done():
                job.future.set_result((score, anomaly_map))
