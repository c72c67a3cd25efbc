"""deal_ros.io.bag.background: prefetch in a thread keeps order, re-raises, stops and closes its source."""

from __future__ import annotations

import threading
import time

import pytest

from deal_ros.io.bag import BagError, iter_rgbd_frames, prefetch


def test_prefetch_preserves_order_and_reraises():
    assert list(prefetch(iter(range(200)), max_queue=4)) == list(range(200))

    def failing():
        yield 1
        raise BagError("boom")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(BagError, match="boom"):
        next(it)


def test_prefetch_stops_and_closes_the_source_when_the_consumer_stops():
    closed = threading.Event()
    produced = []

    def source():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    it = prefetch(source(), max_queue=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.wait(2.0)
    assert len(produced) < 10
    deadline = time.monotonic() + 2.0
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_prefetch_over_a_bag(bag):
    frames = list(prefetch(iter_rgbd_frames(bag.path), max_queue=3))
    assert [f.stamp_ns for f in frames] == bag.rgb_stamps_ns
