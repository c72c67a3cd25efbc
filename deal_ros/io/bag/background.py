"""Reading in a background thread, so that decoding frames overlaps with training on them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


def prefetch(iterator: Iterable[T], max_queue: int = 64) -> Iterator[T]:
    """Run `iterator` in a daemon thread, handing items over through a bounded queue.

    Decoding overlaps with training. Exceptions of the producer are re-raised in the consumer;
    when the consumer stops early (break, close, garbage collection) the producer stops at its
    next item and the source iterator is closed (closing the bag). The consumer waits for the next item without a
    deadline on purpose: as long as decoding it takes, since the producer always ends with an end or error item.
    """
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}")
    items: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max_queue)
    stop = threading.Event()

    def put(entry: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(iterator)
        try:
            for item in source:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as exc:
            put((_ERROR, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="deal_ros-prefetch", daemon=True)
    worker.start()

    def consume() -> Iterator[T]:
        try:
            while True:
                kind, value = items.get()
                if kind == _ITEM:
                    yield value
                elif kind == _END:
                    return
                else:
                    raise value
        finally:
            stop.set()
            while True:
                try:
                    items.get_nowait()
                except queue.Empty:
                    break
            worker.join(timeout=5.0)

    return consume()
