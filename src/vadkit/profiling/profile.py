"""``profile_model``: every efficiency figure of one model, measured the same way for every method.

    from vadkit.profiling import profile_model
    profile = profile_model("padim", params={"covariance": "diagonal"}, data="mvtec/bottle", layout="mvtec")
    profile.as_dict()["latency_ms_b1"]

What is measured, in this order, in this process, with the thread count pinned throughout
(:mod:`~vadkit.profiling.latency`):

1. the model: a model name is created with ``params`` and fitted on the training split (first
   ``max_train`` images), with peak RSS (:mod:`~vadkit.profiling.memory`) and wall time of ``fit`` alone
   (backbone weights are loaded before, so they count in neither); a ``.vad`` file is loaded and is
   profiled for predict only (fit figures None); an :class:`~vadkit.models.AnomalyModel` instance is
   fitted when it is not fitted yet;
2. sizes (:mod:`~vadkit.profiling.sizes`): parameters of the networks, learned-state bytes, model file;
3. predict memory: peak RSS while predicting one batch of ``batch_size`` real images, first call (so
   one-off work such as building a search index is included);
4. MACs per image (:mod:`~vadkit.profiling.flops`) of the whole predict step and of the backbone alone;
5. latency per image at batch 1 and batch N of predict, and of the backbone forward alone, timed in
   alternation; their ratio (median of the per-round ratios) says how far the method is above its
   physical floor (docs/architecture.md, "Performance").

Images: with data, real ones, the test split (else the training split), ``batch_size`` images spread over
it. Without data, a fitted model (a ``.vad`` file) is profiled on seeded random images of its own input
size (``data`` says "synthetic"): its latency, MACs and sizes do not depend on what the pixels show (exact
and product-quantised search scan the whole bank whatever the query), so a plain install measures them
with no dataset. Fitting needs training images, so a model name needs data (``layout="elpv"`` with no
``data`` takes the offline ELPV solar-cell images of the ``elpv-dataset`` package, when installed).

With ``fit=False`` an unfitted model is profiled without training: only what needs no learned state
(parameters, backbone MACs and latency) is filled in.

``Profile.as_dict()`` is one flat dict (numbers, strings, None), the ``vadkit profile --json`` output, with
the keys of :data:`PROFILE_KEYS` in that order (None = not measured):

=============================  ======================================================================
model, backbone                method name, backbone name
model_params                   constructor parameters in ``--param`` syntax (``name=value ...``)
model_file, data, layout       the .vad file profiled (or None), where the images came from
image_size, memory_format      input size (int when square, else "HxW"); backbone memory format
params, param_bytes            parameter count and bytes of the networks
macs                           MACs per image of predict: ``macs_torch`` + ``macs_analytic``
macs_torch, macs_backbone      MACs per image counted by torch: whole predict step / backbone alone
macs_analytic                  work outside torch the model declares (``analytic_macs()``; None: no such method)
macs_analytic_<name>           one per entry of ``analytic_macs()`` (e.g. ``macs_analytic_knn_search``)
macs_uncounted                 what the MACs leave out (a sentence)
bank_bytes, file_bytes         learned state (memory bank, statistics) bytes; model file bytes
peak_rss_mb                    max of the fit and predict peaks, MiB
peak_rss_{fit,predict}_mb      absolute peak RSS of the phase, and ``_delta_mb``: its growth over the start
rss_method                     "hwm" (kernel high-water mark) or "sampled" (see memory.py)
fit_seconds, n_train           wall time of fit, training images
latency_ms_b1, _bN             median ms per image of predict at batch 1 / batch ``batch_n``; ``_p95_``: p95
backbone_ms_b1, _bN            the same for the backbone forward alone (``backbone_p95_ms_b1``: p95)
latency_ratio_b1, _bN          predict / backbone, median of per-round ratios (>= 1; the distance to the floor)
repeats, warmup, threads       timing protocol; cpu, torch_version, vadkit_version: the machine and code
=============================  ======================================================================
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadkit.errors import ParameterError, VadkitError
from vadkit.profiling import sizes
from vadkit.profiling.flops import UNCOUNTED_TORCH_OPS, count_macs, model_macs
from vadkit.profiling.latency import (Timing, backbone_call, make_batches, paired_ratio, predict_call,
                                      time_interleaved)
from vadkit.profiling.memory import PeakRSS
from vadkit.threads import pinned_threads

#: Keys of ``Profile.as_dict()``, plus one ``macs_analytic_<name>`` per entry of a model's ``analytic_macs()``
#: (after ``macs_analytic``).
PROFILE_KEYS = (
    "model", "backbone", "model_params", "model_file", "data", "layout", "image_size", "memory_format",
    "params", "param_bytes", "macs", "macs_torch", "macs_backbone", "macs_analytic", "macs_uncounted",
    "bank_bytes", "file_bytes",
    "peak_rss_mb", "peak_rss_fit_mb", "peak_rss_fit_delta_mb", "peak_rss_predict_mb",
    "peak_rss_predict_delta_mb", "rss_method", "fit_seconds", "n_train",
    "latency_ms_b1", "latency_p95_ms_b1", "latency_ms_bN", "latency_p95_ms_bN", "batch_n",
    "backbone_ms_b1", "backbone_p95_ms_b1", "backbone_ms_bN", "latency_ratio_b1", "latency_ratio_bN",
    "repeats", "warmup", "threads", "cpu", "torch_version", "vadkit_version",
)


@dataclass
class Profile:
    """Efficiency figures of one model (see the module docstring; ``None`` = not measured)."""

    model: str
    backbone: str | None
    model_params: dict[str, Any]
    model_file: str | None
    data: str | None
    layout: str | None
    image_size: int | str
    memory_format: str | None
    params: int
    param_bytes: int
    macs: int | None = None
    macs_torch: int | None = None
    macs_backbone: int | None = None
    macs_analytic: int | None = None
    macs_analytic_items: dict[str, int] = field(default_factory=dict)
    macs_uncounted: str | None = None
    bank_bytes: int | None = None
    file_bytes: int | None = None
    peak_rss_fit_mb: float | None = None
    peak_rss_fit_delta_mb: float | None = None
    peak_rss_predict_mb: float | None = None
    peak_rss_predict_delta_mb: float | None = None
    rss_method: str | None = None
    fit_seconds: float | None = None
    n_train: int | None = None
    latency_b1: Timing | None = None
    latency_bN: Timing | None = None
    backbone_b1: Timing | None = None
    backbone_bN: Timing | None = None
    batch_n: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    threads: int | None = None

    @property
    def peak_rss_mb(self) -> float | None:
        """The higher of the fit and predict peaks (those measured)."""
        peaks = [p for p in (self.peak_rss_fit_mb, self.peak_rss_predict_mb) if p is not None]
        return max(peaks) if peaks else None

    def as_dict(self) -> dict[str, Any]:
        """One flat dict: numbers, strings and None only (``model_params`` in ``--param`` syntax)."""
        from vadkit import __version__

        def median(timing):
            return None if timing is None else timing.median_ms

        def p95(timing):
            return None if timing is None else timing.p95_ms

        def ratio(a, b):
            return None if a is None or b is None else paired_ratio(a, b)

        out = {
            "model": self.model, "backbone": self.backbone, "model_params": format_params(self.model_params),
            "model_file": self.model_file, "data": self.data, "layout": self.layout,
            "image_size": self.image_size, "memory_format": self.memory_format,
            "params": self.params, "param_bytes": self.param_bytes,
            "macs": self.macs, "macs_torch": self.macs_torch, "macs_backbone": self.macs_backbone,
            "macs_analytic": self.macs_analytic,
            **{f"macs_analytic_{name}": value for name, value in self.macs_analytic_items.items()},
            "macs_uncounted": self.macs_uncounted,
            "bank_bytes": self.bank_bytes, "file_bytes": self.file_bytes,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_fit_mb": self.peak_rss_fit_mb, "peak_rss_fit_delta_mb": self.peak_rss_fit_delta_mb,
            "peak_rss_predict_mb": self.peak_rss_predict_mb,
            "peak_rss_predict_delta_mb": self.peak_rss_predict_delta_mb,
            "rss_method": self.rss_method, "fit_seconds": self.fit_seconds, "n_train": self.n_train,
            "latency_ms_b1": median(self.latency_b1), "latency_p95_ms_b1": p95(self.latency_b1),
            "latency_ms_bN": median(self.latency_bN), "latency_p95_ms_bN": p95(self.latency_bN),
            "batch_n": self.batch_n,
            "backbone_ms_b1": median(self.backbone_b1), "backbone_p95_ms_b1": p95(self.backbone_b1),
            "backbone_ms_bN": median(self.backbone_bN),
            "latency_ratio_b1": ratio(self.latency_b1, self.backbone_b1),
            "latency_ratio_bN": ratio(self.latency_bN, self.backbone_bN),
            "repeats": self.repeats, "warmup": self.warmup, "threads": self.threads,
            "cpu": cpu_name(), "torch_version": torch.__version__, "vadkit_version": __version__,
        }
        return out


def format_params(params: dict[str, Any]) -> str:
    """Constructor parameters in the CLI's ``--param`` syntax: ``name=value`` pairs, lists comma-joined."""

    def value(v):
        return ",".join(str(item) for item in v) if isinstance(v, (list, tuple)) else str(v)

    return " ".join(f"{name}={value(v)}" for name, v in params.items())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _is_model_file(target) -> bool:
    path = Path(target)
    return path.suffix == ".vad" or path.is_file()


def resolve_model(model_or_spec, params: dict[str, Any] | None):
    """(model, model file path or None) from a model instance, a ``.vad`` path or a model name."""
    from vadkit.models import AnomalyModel, create_model, load_model

    if isinstance(model_or_spec, AnomalyModel):
        if params:
            raise ParameterError("params apply to a model name, not to a model instance")
        return model_or_spec, None
    if isinstance(model_or_spec, (str, Path)) and _is_model_file(model_or_spec):
        if params:
            raise ParameterError(f"params apply to a model name, not to a model file ({model_or_spec})")
        return load_model(model_or_spec), str(Path(model_or_spec))
    if isinstance(model_or_spec, str):
        return create_model(model_or_spec, **(params or {})), None
    raise ParameterError(f"expected a model name, a .vad file or a model, got {type(model_or_spec).__name__}")


def resolve_split(data, layout: str | None, layout_options: dict[str, Any] | None):
    """(split or None, data description, layout): a Split as given, a folder + layout, a layout that needs no
    folder (``elpv``), or None when neither data nor layout is given (synthetic images, see the docs)."""
    from vadkit.data import Split, load_split

    if isinstance(data, Split):
        return data, "given split", layout
    if data is None and layout is None:
        return None, None, None
    options = dict(layout_options or {})
    layout = layout or "mvtec"
    split = load_split(layout, data, **options)
    return split, (str(Path(data).resolve()) if data is not None else f"{layout} {options}"), layout


def synthetic_images(transform, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` seeded random images of the transform's output size, normalised as the model expects."""
    height, width = transform.output_size
    pixels = torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(transform.mean).view(1, 3, 1, 1)
    std = torch.tensor(transform.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def load_images(samples, transform, count: int) -> torch.Tensor:
    """``count`` images spread evenly over ``samples``, decoded and normalised: (count', 3, H, W)."""
    from vadkit.data import ImageDataset

    picks = np.unique(np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(int))
    dataset = ImageDataset([samples[i] for i in picks], transform)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def _image_size(transform) -> int | str:
    height, width = transform.output_size
    return height if height == width else f"{height}x{width}"


def profile_model(model_or_spec, *, data=None, layout: str | None = None,
                  layout_options: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  batch_size: int = 8, repeats: int = 20, warmup: int = 3, threads: int | None = None,
                  max_train: int | None = None, fit: bool = True, progress: bool | None = None) -> Profile:
    """Measure one model; see the module docstring.

    Args:
        model_or_spec: a model name (``"patchcore"``), a ``.vad`` file, or an :class:`AnomalyModel`.
        data, layout, layout_options: where the images come from (a dataset root + layout, or a
            :class:`~vadkit.data.Split`); none given: synthetic images (see the module docstring).
            ``layout`` defaults to ``mvtec`` when ``data`` is a folder.
        params: constructor parameters when ``model_or_spec`` is a name.
        batch_size: N, the batch of the second latency figure, of fitting, and of the predict-memory phase.
        repeats, warmup: timed and untimed calls per latency figure.
        threads: intra-op threads for everything measured (default: the CPUs available to the process).
        max_train: fit on the first ``max_train`` training images only (default: all).
        fit: ``False`` profiles an unfitted model without training it.
        progress: progress bars while fitting (None: the VADKIT_PROGRESS default).
    """
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not (isinstance(value, int) and value >= low):
            raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    if max_train is not None and not (isinstance(max_train, int) and max_train >= 1):
        raise ParameterError(f"max_train must be an integer >= 1, got {max_train!r}")
    model, model_file = resolve_model(model_or_spec, params)
    split, data_description, layout = resolve_split(data, layout, layout_options)
    extractor = model.extractor  # load the backbone weights before anything is measured (None: no backbone)
    with pinned_threads(threads) as n_threads:
        profile = Profile(
            model=model.name, backbone=model.backbone, model_params=model.get_params(),
            model_file=model_file, data=data_description, layout=layout, image_size=_image_size(model.transform),
            memory_format=_memory_format(extractor), params=sizes.parameter_count(model),
            param_bytes=sizes.parameter_bytes(model), batch_n=batch_size, repeats=repeats, warmup=warmup,
            threads=n_threads)
        if not model.fitted and fit:
            if split is None:
                raise VadkitError(f"fitting {model.name} to profile it needs training images: pass data (CLI: --data "
                                  "DIR --layout ...), or profile a trained .vad file, or an unfitted model with "
                                  "fit=False (CLI: --no-fit)")
            _fit(model, split, profile, batch_size, max_train, progress)
            # a trained method's networks (student, decoder) exist only once it is fitted
            profile.params, profile.param_bytes = sizes.parameter_count(model), sizes.parameter_bytes(model)
        if split is None:
            images = synthetic_images(model.transform, batch_size)
            profile.data = f"synthetic: {batch_size} seeded random images of the model's input size"
        else:
            images = load_images(split.test or split.train, model.transform, batch_size)
        if model.fitted:
            _measure_fitted(model, images, profile, batch_size)
        elif extractor is not None:
            profile.macs_backbone = count_macs(extractor, images[:1])
            profile.macs_uncounted = ("model not fitted: only the backbone counted; not counted: "
                                      + ", ".join(UNCOUNTED_TORCH_OPS))
        _measure_latency(model, extractor, images, profile, batch_size, repeats, warmup)
    return profile


def _memory_format(extractor) -> str | None:
    memory_format = getattr(extractor, "memory_format", None)
    if memory_format is None:
        return None
    return "channels_last" if memory_format == torch.channels_last else "contiguous"


def _fit(model, split, profile: Profile, batch_size: int, max_train: int | None, progress: bool | None) -> None:
    from vadkit.data import ImageDataset

    train = split.train[:max_train] if max_train else split.train
    if not train:
        raise VadkitError("the data has no training images to fit the model on")
    dataset = ImageDataset(train, model.transform)  # decoded/checked once, outside the measured phase
    with PeakRSS() as peak:
        start = time.perf_counter()
        model.fit(dataset, batch_size=batch_size, progress=progress)
        profile.fit_seconds = time.perf_counter() - start
    profile.n_train = len(dataset)
    profile.peak_rss_fit_mb, profile.peak_rss_fit_delta_mb = peak.peak_mb, peak.delta_mb
    profile.rss_method = peak.method


def _measure_fitted(model, images: torch.Tensor, profile: Profile, batch_size: int) -> None:
    profile.bank_bytes = sizes.state_bytes(model)
    profile.file_bytes = (Path(profile.model_file).stat().st_size if profile.model_file
                          else sizes.saved_file_bytes(model))
    batch = make_batches(images, batch_size)[0]
    with PeakRSS() as peak:
        model.predict(batch, batch_size=batch_size, progress=False)
    profile.peak_rss_predict_mb, profile.peak_rss_predict_delta_mb = peak.peak_mb, peak.delta_mb
    profile.rss_method = peak.method
    macs = model_macs(model, images[:batch_size] if model.transductive else images[:1])
    profile.macs, profile.macs_torch, profile.macs_backbone = macs.total, macs.torch, macs.backbone
    profile.macs_analytic, profile.macs_analytic_items = macs.analytic_total, macs.analytic
    profile.macs_uncounted = macs.uncounted


def _measure_latency(model, extractor, images: torch.Tensor, profile: Profile, batch_size: int, repeats: int,
                     warmup: int) -> None:
    """Predict and backbone-only latency, interleaved call by call, at batch 1 then at batch N (a transductive model
    scores a set of images together: its latency is per image of a set of N, and at batch 1 only the backbone's)."""
    for size in (1, batch_size):
        calls = {}
        if model.fitted and not (model.transductive and size == 1):
            calls["predict"] = predict_call(model, images, size)
        if extractor is not None:
            calls["backbone"] = backbone_call(extractor, images, size)
        if not calls:
            continue
        timings = {name: t.per_item(size) for name, t in time_interleaved(calls, repeats=repeats,
                                                                          warmup=warmup).items()}
        if size == 1:
            profile.latency_b1, profile.backbone_b1 = timings.get("predict"), timings.get("backbone")
        else:
            profile.latency_bN, profile.backbone_bN = timings.get("predict"), timings.get("backbone")
