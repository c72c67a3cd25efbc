"""Image-level tags ("which objects are in view"): parsing, validation, time schedules, a node's current tags.

Unknown class names are refused loudly (design: "Unknown class names are refused loudly"), with
the close matches that are most likely meant. An empty string is a valid answer: no object in view.
"""

from __future__ import annotations

import difflib
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deal_ros.errors import DealRosError

__all__ = ["TagRange", "TagSchedule", "TagState", "TagUpdate", "UnknownTagError", "parse_tags", "tags_from_parameter",
           "tags_parameter_value"]


class UnknownTagError(DealRosError, ValueError):
    """Tag names that are not among the configured classes; names them and the known classes."""

    def __init__(self, unknown: Sequence[str], classes: Sequence[str]) -> None:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(classes), n=3, cutoff=0.6)
            if not close:
                close = [c for c in classes if c.lower() == name.lower()]
            if close:
                hints.append(f"{name!r} -> did you mean {' or '.join(repr(c) for c in close)}?")
        message = f"unknown tag(s) {', '.join(repr(n) for n in unknown)}; known classes: {list(classes)}"
        if hints:
            message += "; " + "; ".join(hints)
        super().__init__(message)
        self.unknown = list(unknown)
        self.classes = list(classes)


def parse_tags(text: str | Sequence[str], classes: Sequence[str] | None = None) -> list[str]:
    """'mug, box' (or ['mug', 'box']) -> ['mug', 'box'], checked against `classes` when given.

    Names are stripped of spaces and de-duplicated (first occurrence kept) but otherwise matched
    exactly (case-sensitive, like the class list); '' means "no objects" and gives [].
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    tags: list[str] = []
    for part in parts:
        name = str(part).strip()
        if name and name not in tags:
            tags.append(name)
    if classes is not None:
        unknown = [t for t in tags if t not in classes]
        if unknown:
            raise UnknownTagError(unknown, classes)
    return tags


@dataclass(frozen=True)
class TagRange:
    """Tags valid for bag time in [start_s, end_s)."""

    start_s: float
    end_s: float
    tags: tuple[str, ...]


@dataclass
class TagSchedule:
    """Tags by time range, for bags recorded without a tags topic.

    YAML: either a list of ``{start_s, end_s, tags}`` entries, or a mapping
    ``{time: relative|absolute, ranges: [...]}``. ``relative`` (default) times are seconds since the
    bag's first message; ``absolute`` times are bag (receive) time in seconds since the epoch.
    ``tags`` is a comma-separated string or a list; ranges may not overlap. Frames outside every
    range have no tags (they are skipped and counted).
    """

    ranges: list[TagRange]
    relative: bool = True

    def __post_init__(self) -> None:
        ordered = sorted(self.ranges, key=lambda r: r.start_s)
        for r in ordered:
            if not r.end_s > r.start_s:
                raise ValueError(f"tag range [{r.start_s}, {r.end_s}) is empty: end_s must be > start_s")
        for a, b in itertools.pairwise(ordered):
            if b.start_s < a.end_s:
                raise ValueError(
                    f"tag ranges overlap: [{a.start_s}, {a.end_s}) {list(a.tags)} and "
                    f"[{b.start_s}, {b.end_s}) {list(b.tags)}"
                )
        self.ranges = ordered

    @classmethod
    def from_dict(
        cls, data: Any, classes: Sequence[str] | None = None, source: str = "tag schedule"
    ) -> TagSchedule:
        relative = True
        entries = data
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"time", "ranges"})
            if unknown:
                raise ValueError(f"{source}: unknown key(s) {unknown} (known: time, ranges)")
            mode = data.get("time", "relative")
            if mode not in ("relative", "absolute"):
                raise ValueError(f"{source}: time must be 'relative' or 'absolute', got {mode!r}")
            relative = mode == "relative"
            entries = data.get("ranges")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{source}: expected a non-empty list of {{start_s, end_s, tags}} entries")
        ranges = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != {"start_s", "end_s", "tags"}:
                raise ValueError(
                    f"{source}: entry {i} must have exactly start_s, end_s and tags, got {entry!r}"
                )
            try:
                start_s, end_s = float(entry["start_s"]), float(entry["end_s"])
            except (TypeError, ValueError):
                raise ValueError(f"{source}: entry {i}: start_s and end_s must be numbers") from None
            tags_value = entry["tags"] if entry["tags"] is not None else ""
            tags = parse_tags(tags_value, classes)
            ranges.append(TagRange(start_s, end_s, tuple(tags)))
        try:
            return cls(ranges, relative)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, classes: Sequence[str] | None = None) -> TagSchedule:
        """Load and validate a schedule file (tags checked against `classes` when given)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tag schedule not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"tag schedule {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, classes, source=f"tag schedule {path}")

    def validate(self, classes: Sequence[str]) -> None:
        """Raise UnknownTagError when a range names a class outside `classes`."""
        unknown = sorted({t for r in self.ranges for t in r.tags if t not in classes})
        if unknown:
            raise UnknownTagError(unknown, classes)

    def tags_at(self, time_ns: int, bag_start_ns: int) -> list[str] | None:
        """Tags at bag time `time_ns`, or None outside every range."""
        t_s = (time_ns - bag_start_ns) / 1e9 if self.relative else time_ns / 1e9
        for r in self.ranges:
            if r.start_s <= t_s < r.end_s:
                return list(r.tags)
        return None


# -- a node's current tags ---------------------------------------------------------------------
# The current tags ("objects in view") of a node, set from a parameter or a topic.
#
# A bad update is refused loudly and the previous tags stay: a typo on the tags topic must not
# silently teach the robot that nothing is in view. Listeners let each node mirror the current tags
# into its `tags` parameter, whichever way they came (`ros2 param get` tells the truth).


@dataclass(frozen=True)
class TagUpdate:
    """Outcome of one update: the tags now in force, whether they changed, and an error to log."""

    tags: tuple[str, ...]
    changed: bool
    error: str = ""


def tags_from_parameter(value: Any, classes: Sequence[str]) -> list[str]:
    """Parameter value (string list, comma-separated string, or rclpy's empty byte array) -> checked tags."""
    if isinstance(value, (bytes, bytearray)) or value is None:
        value = ""
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"tags must be a string list or a comma-separated string, got {value!r}")
    if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        value = value.strip()[1:-1]  # "[mug, box]" given as one string (a launch argument)
    if isinstance(value, (list, tuple)):
        # ["mug, box"] (one element holding a list) is a common launch-file spelling: accept it
        value = [part for item in value for part in str(item).split(",")]
    if isinstance(value, str):
        value = [part.strip().strip("'\"") for part in value.split(",")]
    return parse_tags(value, classes)


class TagState:
    """Thread-safe holder of the current tags; shared by the trainer and segmenter nodes in one process."""

    def __init__(self, classes: Sequence[str], initial: Any = "") -> None:
        self.classes = list(classes)
        self._lock = threading.Lock()
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
            tags = tuple(tags_from_parameter(value, self.classes))
        except (UnknownTagError, ValueError) as exc:
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
