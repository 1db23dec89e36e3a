"""Split images into overlapping tiles and stitch per-tile anomaly maps back into one map.

Why tiles: a small defect in a large image vanishes when the image is squeezed to a network's input size; cut
into tiles at (near) native resolution, each tile is an ordinary input and the defect keeps its pixels. The
model-layer wrapper (:mod:`vadkit.models.tiled`) runs any method per tile with these two functions; methods
never see tiles.

Layout. Tiles of ``tile = (th, tw)`` step by ``round(side * (1 - overlap))`` along each axis; the last tile of
a row or column is moved flush with the image's far edge, so every pixel is covered and no tile leaves the
image (the image must be at least one tile large). Positions are the same for every image of one size, which
is what a tiled ensemble (one model per position) needs.

Stitching is a weighted mean. Each tile's map is multiplied by a window that is 1 in its middle and falls
linearly to ``1 / (ramp + 1)`` over its ``ramp`` outer pixels on each side (``ramp`` = half the overlap),
summed into the image, and divided by the sum of the windows. Since the windows are positive everywhere, the
normaliser never vanishes and a constant map stays exactly that constant; a value found by one tile lands on
the pixel where that tile found it. The ramps fade seams: where tiles overlap, the pixel nearer a tile's centre
(where the network saw more context) weighs more.
"""

from __future__ import annotations

import torch

__all__ = ["TileStitcher", "tile_positions", "tile_window", "split_tiles", "stitch_tiles"]


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if tile > size:
        raise ValueError(f"a tile of {tile} px does not fit an image side of {size} px: use a smaller tile or a "
                         "larger image_size")
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:  # the last tile flush with the far edge: every pixel covered
        starts.append(size - tile)
    return starts


def tile_stride(tile: tuple[int, int], overlap: float) -> tuple[int, int]:
    """Step between tile origins per axis: ``round(side * (1 - overlap))``, at least one pixel."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return tuple(max(1, round(side * (1.0 - overlap))) for side in tile)


def tile_positions(size: tuple[int, int], tile: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """``(top, left)`` of every tile of an image of ``size = (H, W)``, row by row."""
    stride = tile_stride(tile, overlap)
    rows = _starts(size[0], tile[0], stride[0])
    columns = _starts(size[1], tile[1], stride[1])
    return [(top, left) for top in rows for left in columns]


def tile_window(tile: tuple[int, int], overlap: float, dtype=torch.float32) -> torch.Tensor:
    """The ``(th, tw)`` stitching weight of one tile (module docstring): 1 inside, linear ramps at the edges."""
    weights = []
    for side in tile:
        ramp = max(0, round(side * overlap / 2))
        distance = torch.minimum(torch.arange(side), torch.arange(side).flip(0)).to(dtype)  # to the nearest edge
        weights.append(((distance + 1) / (ramp + 1)).clamp(max=1.0) if ramp else torch.ones(side, dtype=dtype))
    return weights[0][:, None] * weights[1][None, :]


def split_tiles(images: torch.Tensor, positions: list[tuple[int, int]], tile: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, T, C, th, tw)``: the tiles of every image, in ``positions`` order."""
    height, width = tile
    return torch.stack([images[:, :, top:top + height, left:left + width] for top, left in positions], dim=1)


def stitch_tiles(tile_maps: torch.Tensor, positions: list[tuple[int, int]], size: tuple[int, int],
                 window: torch.Tensor) -> torch.Tensor:
    """``(B, T, th, tw)`` per-tile maps -> ``(B, H, W)``: the window-weighted mean over the tiles covering each
    pixel (module docstring). ``window`` is :func:`tile_window`'s."""
    stitcher = TileStitcher(tile_maps.shape[0], size, window, tile_maps.dtype, tile_maps.device)
    for index, position in enumerate(positions):
        stitcher.add(tile_maps[:, index], position)
    return stitcher.result()


class TileStitcher:
    """:func:`stitch_tiles` a tile at a time: the maps of a large image are summed as their tiles are scored, so
    no stack of every tile's map is ever held (memory: the image's map and one tile batch)."""

    def __init__(self, batch: int, size: tuple[int, int], window: torch.Tensor, dtype=torch.float32, device=None):
        self.window = window.to(device, dtype)
        self.total = torch.zeros((batch, *size), dtype=dtype, device=device)
        self.weight = torch.zeros(size, dtype=dtype, device=device)

    def add(self, maps: torch.Tensor, position: tuple[int, int]) -> None:
        """``maps`` (B, th, tw): one tile position's maps of every image."""
        (top, left), (height, width) = position, self.window.shape
        self.total[:, top:top + height, left:left + width] += maps.to(self.total.dtype) * self.window
        self.weight[top:top + height, left:left + width] += self.window

    def result(self) -> torch.Tensor:
        return self.total / self.weight
