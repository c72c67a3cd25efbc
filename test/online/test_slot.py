"""Latest-frame slot: latest wins, drops counted, threads and close."""

from __future__ import annotations

import threading
import time

import pytest

from deal_ros.online.slot import LatestSlot


def test_slot_latest_wins_and_counts_drops():
    clock = [0.0]
    slot: LatestSlot[int] = LatestSlot(clock=lambda: clock[0])
    assert not slot.put(1)
    assert slot.put(2) and slot.put(3)
    clock[0] = 0.25
    taken = slot.take(timeout=0)
    assert taken.item == 3 and taken.wait_s == pytest.approx(0.25)
    assert slot.dropped == 2 and slot.take(timeout=0) is None


def test_slot_threads_and_close():
    slot: LatestSlot[int] = LatestSlot()
    got = []

    def consumer():
        while True:
            taken = slot.take(timeout=1.0)
            if taken is None:
                return
            got.append(taken.item)
            time.sleep(0.01)  # a slow consumer

    thread = threading.Thread(target=consumer)
    thread.start()
    for i in range(200):
        slot.put(i)
        time.sleep(0.0005)
    time.sleep(0.05)
    slot.close()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert got == sorted(got) and got[-1] == 199  # in order, the newest always served
    assert slot.dropped + len(got) == 200 and slot.dropped > 0
