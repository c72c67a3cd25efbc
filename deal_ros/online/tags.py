"""The current tags ("objects in view") of a node, set from a parameter or a topic.

A bad update is refused loudly and the previous tags stay: a typo on the tags topic must not
silently teach the robot that nothing is in view. Listeners let each node mirror the current tags
into its `tags` parameter, whichever way they came (`ros2 param get` tells the truth).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deal_ros.frames.tags import TagError, parse_tags


@dataclass(frozen=True)
class TagUpdate:
    """Outcome of one update: the tags now in force, whether they changed, and an error to log."""

    tags: tuple[str, ...]
    changed: bool
    error: str = ""


class TagState:
    """Thread-safe holder of the current tags; shared by the trainer and segmenter nodes in one process."""

    def __init__(self, classes: Sequence[str], initial: Any = "") -> None:
        self.classes = list(classes)
        self._lock = threading.Lock()  # held for an assignment or a read only: no deadline needed
        self._tags: tuple[str, ...] = ()
        self._known = False
        self.refused = 0
        self._listeners: list[tuple[Any, Callable[[TagUpdate], None]]] = []
        result = self.set(initial, source="parameter 'tags'", explicit=bool(initial))
        if result.error:
            raise ValueError(result.error)

    @property
    def tags(self) -> tuple[str, ...]:
        with self._lock:
            return self._tags

    @property
    def known(self) -> bool:
        """False until someone set tags (a parameter or topic value, '' included once explicitly given)."""
        with self._lock:
            return self._known

    def add_listener(self, owner: Any, callback: Callable[[TagUpdate], None]) -> None:
        """Call `callback` after every change, except changes made with origin=`owner` (its own parameter)."""
        with self._lock:
            self._listeners.append((owner, callback))

    def set(self, value: Any, source: str = "tags", explicit: bool = True, origin: Any = None) -> TagUpdate:
        """Apply a parameter / topic value; on an unknown class keep the previous tags and return the error.

        `explicit` = False for a start-up default of '' (nothing said yet: the trainer must not learn
        "nothing in view" from it); any later value, '' included, makes the tags known. Listeners other
        than `origin` hear of a change (outside the lock: they may set their node's `tags` parameter).
        """
        try:
            tags = tuple(parse_tags(value, self.classes))
        except TagError as exc:
            with self._lock:
                self.refused += 1
                return TagUpdate(self._tags, False, f"{source}: {exc}; keeping the previous tags {list(self._tags)}")
        with self._lock:
            changed = tags != self._tags
            self._tags = tags
            self._known = self._known or explicit or bool(tags)
            listeners = [cb for owner, cb in self._listeners if owner is not origin] if changed else []
        update = TagUpdate(tags, changed)
        for callback in listeners:
            callback(update)
        return update


def tags_parameter_value(tags: Sequence[str]) -> list[str] | str:
    """The `tags` parameter value for `tags`: a string list, or '' for none (rclpy types [] as a byte array)."""
    return list(tags) if tags else ""
