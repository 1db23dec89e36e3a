"""Few-shot training sets: K normal images drawn from the training split, reproducibly.

Few-shot anomaly detection (AnomalyDINO, WinCLIP, ...) fits on K normal images (1, 2, 4, 8, 16, ...) and
reports the mean and spread over several draws. A draw here is a function of (number of images, K, seed)
alone: the same seed gives the same images on every machine, another seed another set.
"""

from __future__ import annotations

from collections.abc import Sequence

from vadkit.errors import ParameterError


def check_shots(shots) -> None:
    if shots is not None and not (isinstance(shots, int) and not isinstance(shots, bool) and shots >= 1):
        raise ParameterError(f"shots must be an integer >= 1 (normal training images) or None (all), got {shots!r}")


def draw_shots(n_images: int, shots: int | None, seed: int) -> list[int]:
    """Sorted indices of ``shots`` of ``n_images`` images drawn without replacement by ``seed`` (all of them
    when ``shots`` is None or not smaller than ``n_images``)."""
    import torch

    check_shots(shots)
    if shots is None or shots >= n_images:
        return list(range(n_images))
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:shots].tolist())


def take(data, indices: Sequence[int]):
    """The images ``indices`` of a batch tensor, an :class:`~vadkit.data.ImageDataset` or a list of samples,
    as the same kind of object."""
    import torch

    from vadkit.data.dataset import ImageDataset

    if isinstance(data, torch.Tensor):
        return data[list(indices)]
    if isinstance(data, ImageDataset):
        samples = data.samples
        return ImageDataset([samples[i] for i in indices], data.transform)
    if isinstance(data, Sequence):
        return [data[i] for i in indices]
    raise TypeError(f"cannot draw shots from {type(data).__name__}: pass a tensor, an ImageDataset or samples")
