"""Tiles: layout, splitting, and stitching that is exact on constants, impulses and split maps."""

import pytest
import torch

from vadkit.ops.tiling import split_tiles, stitch_tiles, tile_positions, tile_window


def test_tiles_cover_the_image_and_the_last_one_is_flush_with_the_far_edge():
    positions = tile_positions((100, 70), (32, 32), overlap=0.25)   # stride 24
    assert sorted({top for top, _ in positions}) == [0, 24, 48, 68]
    assert sorted({left for _, left in positions}) == [0, 24, 38]
    covered = torch.zeros(100, 70, dtype=torch.bool)
    for top, left in positions:
        covered[top:top + 32, left:left + 32] = True
    assert covered.all()


def test_a_tile_larger_than_the_image_and_a_bad_overlap_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        tile_positions((20, 64), (32, 32), 0.0)
    with pytest.raises(ValueError, match="overlap"):
        tile_positions((64, 64), (32, 32), 1.0)


def test_the_window_is_positive_and_one_in_the_middle():
    window = tile_window((32, 32), overlap=0.5)
    assert window.min() > 0 and window[8:24, 8:24].eq(1).all() and window[0, 0] < window[4, 4] < 1


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_a_constant_map_stays_constant_and_a_split_map_stitches_back_exactly(overlap):
    size, tile = (70, 90), (32, 40)
    positions = tile_positions(size, tile, overlap)
    window = tile_window(tile, overlap, dtype=torch.float64)
    constant = torch.full((2, len(positions), *tile), 7.0, dtype=torch.float64)
    torch.testing.assert_close(stitch_tiles(constant, positions, size, window), torch.full((2, *size), 7.0,
                                                                                         dtype=torch.float64))
    maps = torch.rand(2, 1, *size, dtype=torch.float64)
    tiles = split_tiles(maps, positions, tile)[:, :, 0]   # tiles that agree where they overlap
    torch.testing.assert_close(stitch_tiles(tiles, positions, size, window), maps[:, 0])


def test_an_impulse_found_by_one_tile_lands_where_it_was():
    size, tile = (64, 64), (32, 32)
    positions = tile_positions(size, tile, 0.25)
    maps = torch.zeros(1, len(positions), *tile)
    index = 4                                     # the middle tile, at (21, 21) with a stride of 24... or flush
    top, left = positions[index]
    maps[0, index, 5, 6] = 1.0
    stitched = stitch_tiles(maps, positions, size, tile_window(tile, 0.25))
    assert stitched[0, top + 5, left + 6] > 0
    assert torch.count_nonzero(stitched) == 1


def test_split_returns_every_tile_in_position_order():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    positions = tile_positions((8, 8), (4, 4), 0.0)
    tiles = split_tiles(images, positions, (4, 4))
    assert tiles.shape == (2, 4, 3, 4, 4)
    torch.testing.assert_close(tiles[1, 3], images[1, :, 4:, 4:])
