"""Offline approximate time synchronisation, same semantics as message_filters (Python).

Offline training must pair frames exactly as the online trainer does, so this re-implements
``message_filters.ApproximateTimeSynchronizer.add`` (ros2/message_filters, Python) without rclpy:

- one queue per stream, keyed by stamp (a second message with the same stamp replaces the first);
  a queue longer than ``queue_size`` loses its oldest stamp;
- a match is only attempted when a message arrives: the other queues' stamps within ``slop``
  (``|dt| <= slop``) of the new one are sorted by distance and the combinations tried in that
  order; the first whose spread ``max - min < slop`` (strict) is emitted and removed from the
  queues; unmatched older messages stay until pushed out.

Everything is integer nanoseconds, as rclpy's Duration/Time compare.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["ApproximateTimeSync", "SyncStats"]


@dataclass
class SyncStats:
    """What happened to every message fed to the synchroniser, per stream."""

    received: list[int]
    matched: int = 0
    dropped_overflow: list[int] = field(default_factory=list)
    """Pushed out of a full queue (queue_size) before a partner arrived."""
    dropped_duplicate: list[int] = field(default_factory=list)
    """Replaced by a later message with the same stamp on the same stream."""
    unmatched_at_end: list[int] = field(default_factory=list)
    """Still waiting in a queue when the input ended (counted by :meth:`ApproximateTimeSync.finish`)."""

    @property
    def dropped(self) -> list[int]:
        """Messages of each stream that never became part of a match."""
        return [
            a + b + c
            for a, b, c in zip(
                self.dropped_overflow, self.dropped_duplicate, self.unmatched_at_end, strict=True
            )
        ]


class ApproximateTimeSync(Generic[T]):
    """Push-style synchroniser: ``add(stream, stamp_ns, item)`` returns a match or None.

    A match is a tuple with one ``(stamp_ns, item)`` per stream, in stream order.
    """

    def __init__(self, num_streams: int, queue_size: int, slop_s: float) -> None:
        if num_streams < 2:
            raise ValueError("need at least two streams to synchronise")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop_s < 0:
            raise ValueError(f"slop must be >= 0 s, got {slop_s}")
        self.queue_size = queue_size
        # rclpy: Duration(seconds=slop) -> int(slop * 1e9) nanoseconds
        self.slop_ns = int(slop_s * 1_000_000_000)
        self.queues: list[dict[int, T]] = [{} for _ in range(num_streams)]
        zeros = [0] * num_streams
        self.stats = SyncStats(
            received=list(zeros),
            dropped_overflow=list(zeros),
            dropped_duplicate=list(zeros),
            unmatched_at_end=list(zeros),
        )

    def add(self, stream: int, stamp_ns: int, item: T) -> tuple[tuple[int, T], ...] | None:
        """Feed one message (in arrival order); return the match it completes, if any."""
        stamp_ns = int(stamp_ns)
        queue = self.queues[stream]
        self.stats.received[stream] += 1
        if stamp_ns in queue:
            self.stats.dropped_duplicate[stream] += 1
        queue[stamp_ns] = item
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.stats.dropped_overflow[stream] += 1
        if stamp_ns not in queue:
            return None  # it was the oldest of a full queue (arrived late): message_filters drops it too

        candidates: list[list[int]] = []
        for index, other in enumerate(self.queues):
            if index == stream:
                continue
            near = [(abs(s - stamp_ns), s) for s in other if abs(s - stamp_ns) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda pair: pair[0])  # stable: ties keep queue insertion order
            candidates.append([s for _, s in near])

        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(stream, stamp_ns)
            if max(stamps) - min(stamps) < self.slop_ns:
                match = tuple((s, q.pop(s)) for q, s in zip(self.queues, stamps, strict=True))
                self.stats.matched += 1
                return match
        return None

    def finish(self) -> SyncStats:
        """Count what is left in the queues as unmatched and empty them; returns the stats."""
        for index, queue in enumerate(self.queues):
            self.stats.unmatched_at_end[index] += len(queue)
            queue.clear()
        return self.stats
