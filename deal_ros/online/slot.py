"""Latest-frame-wins hand-over from a subscription callback to a worker thread.

A queue deeper than one behind a slow consumer makes the node work on ever older images; this
slot holds one item, a newer one replaces it (counted as a drop), and the consumer learns how
old the item it got is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

T = TypeVar("T")


@dataclass
class Taken(Generic[T]):
    item: T
    put_time: float
    """Clock time when the item was put (receipt)."""
    wait_s: float
    """How long it sat in the slot before being taken."""


class LatestSlot(Generic[T]):
    """One-item mailbox; `put` never blocks (keep it in callbacks), `take` blocks with a timeout."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._item: T | None = None
        self._put_time = 0.0
        self._has = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store `item`, replacing (dropping) an untaken one; returns True when one was dropped."""
        with self._cond:
            dropped = self._has
            if dropped:
                self.dropped += 1
            self._item, self._put_time, self._has = item, self._clock(), True
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> Taken[T] | None:
        """The newest item, or None after `timeout` seconds or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has or self._closed, timeout=timeout) or not self._has:
                return None
            item, put_time = self._item, self._put_time
            self._item, self._has = None, False
        return Taken(cast(T, item), put_time, self._clock() - put_time)  # _has: the item is one put (None may be a T)

    def close(self) -> None:
        """Wake a waiting consumer for shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
