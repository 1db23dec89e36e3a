"""The prefetching iterator keeps order, surfaces errors at the failing item, and really runs ahead."""

import threading

import pytest

from vadkit.data.prefetch import prefetched


def test_yields_every_item_in_order():
    assert list(prefetched(range(10))) == list(range(10))
    assert list(prefetched([])) == []


def test_an_error_surfaces_at_the_item_that_failed():
    def items():
        yield 1
        yield 2
        raise OSError("broken.png: cannot identify image file")

    seen = []
    with pytest.raises(OSError, match="broken.png"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_next_item_is_produced_while_the_caller_holds_this_one():
    produced = threading.Event()

    def items():
        yield "first"
        produced.set()
        yield "second"

    iterator = prefetched(items())
    assert next(iterator) == "first"
    assert produced.wait(timeout=5), "the second item was not produced ahead of the request"
    assert next(iterator) == "second"


def test_stopping_early_does_not_hang_or_leak_the_helper_thread():
    iterator = prefetched(iter(range(1000)))
    assert next(iterator) == 0
    assert any(t.name.startswith("vadkit-prefetch") for t in threading.enumerate())
    iterator.close()  # what a consumer's early break or an exception does to the generator
    assert not any(t.name.startswith("vadkit-prefetch") for t in threading.enumerate())
