"""Decode the next batch while the model works on this one.

Reading and resizing images (PNG inflate, JPEG decode, PIL resampling) run in C with the GIL released, so a
single helper thread overlaps them with the backbone's forward pass without the start-up cost and memory
copies of DataLoader worker processes. Order is preserved; an error raised while loading a batch (a bad file)
surfaces at that batch, as without prefetching.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetched(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items`` in order, producing item i + 1 in a helper thread while the caller consumes item i."""
    iterator = iter(items)
    sentinel = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vadkit-prefetch") as pool:
        pending = pool.submit(next, iterator, sentinel)
        while True:
            item = pending.result()
            if item is sentinel:
                return
            pending = pool.submit(next, iterator, sentinel)
            yield item
