"""Image-level tags ("which objects are in view"): parsing, validation, the class vector, time schedules.

Unknown class names are refused loudly (design: "Unknown class names are refused loudly"), with
the close matches that are most likely meant. An empty string is a valid answer: no object in view.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.errors import DealRosError, one_line

__all__ = ["TagError", "TagRange", "TagSchedule", "UnknownTagError", "parse_tags", "refuse_unknown", "tags_to_vector"]


class TagError(DealRosError, ValueError):
    """Tags that cannot be used: unknown names, a bad tag schedule."""


class UnknownTagError(TagError):
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


def parse_tags(value: Any, classes: Sequence[str] | None = None) -> list[str]:
    """Tags as people and tools write them -> names, checked against `classes` when given.

    The one reader of tags text: --tags, a bag's tags topic and the nodes' parameter and topic all
    read it here, so one bag teaches the same classes offline and on the robot. Accepted: 'mug, box',
    '[mug, box]' and "[mug, 'box']" (the README's parameter syntax, a launch argument), a list of names,
    a list holding one 'mug, box' (a common launch-file spelling), and '', None or rclpy's empty byte
    array (no objects: []). Names are stripped of spaces and quotes and de-duplicated (first kept), but
    otherwise matched exactly (case-sensitive, like the class list).
    """
    if isinstance(value, (bytes, bytearray)) or value is None:
        value = ""
    if not isinstance(value, (str, list, tuple)):
        raise TagError(f"tags must be a list of names or a comma-separated string, got {value!r}")
    items = [value] if isinstance(value, str) else list(value)
    tags: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        for part in text.split(","):
            name = part.strip().strip("'\"").strip()
            if name and name not in tags:
                tags.append(name)
    if classes is not None:
        refuse_unknown(tags, classes)
    return tags


def refuse_unknown(names: Sequence[str], classes: Sequence[str]) -> None:
    """Raise UnknownTagError naming every one of `names` (in their order) that is not among `classes`."""
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise UnknownTagError(unknown, classes)


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
                raise TagError(f"tag range [{r.start_s}, {r.end_s}) is empty: end_s must be > start_s")
        for a, b in itertools.pairwise(ordered):
            if b.start_s < a.end_s:
                raise TagError(
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
                raise TagError(f"{source}: unknown key(s) {unknown} (known: time, ranges)")
            mode = data.get("time", "relative")
            if mode not in ("relative", "absolute"):
                raise TagError(f"{source}: time must be 'relative' or 'absolute', got {mode!r}")
            relative = mode == "relative"
            entries = data.get("ranges")
        if not isinstance(entries, list) or not entries:
            raise TagError(f"{source}: expected a non-empty list of {{start_s, end_s, tags}} entries")
        ranges = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != {"start_s", "end_s", "tags"}:
                raise TagError(
                    f"{source}: entry {i} must have exactly start_s, end_s and tags, got {entry!r}"
                )
            try:
                start_s, end_s = float(entry["start_s"]), float(entry["end_s"])
            except (TypeError, ValueError):
                raise TagError(f"{source}: entry {i}: start_s and end_s must be numbers") from None
            tags_value = entry["tags"] if entry["tags"] is not None else ""
            tags = parse_tags(tags_value, classes)
            ranges.append(TagRange(start_s, end_s, tuple(tags)))
        try:
            return cls(ranges, relative)
        except TagError as exc:
            raise TagError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, classes: Sequence[str] | None = None) -> TagSchedule:
        """Load and validate a schedule file (tags checked against `classes` when given)."""
        import yaml

        from deal_ros.config.strict_yaml import load_yaml

        path = Path(path)
        if not path.is_file():
            raise TagError(f"tag schedule not found: {path}")
        try:
            data = load_yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise TagError(f"tag schedule {path} is not valid YAML: {one_line(exc)}") from None
        return cls.from_dict(data, classes, source=f"tag schedule {path}")

    def validate(self, classes: Sequence[str]) -> None:
        """Raise UnknownTagError when a range names a class outside `classes`."""
        refuse_unknown(sorted({t for r in self.ranges for t in r.tags}), classes)

    def tags_at(self, time_ns: int, bag_start_ns: int) -> list[str] | None:
        """Tags at bag time `time_ns`, or None outside every range."""
        t_s = (time_ns - bag_start_ns) / 1e9 if self.relative else time_ns / 1e9
        for r in self.ranges:
            if r.start_s <= t_s < r.end_s:
                return list(r.tags)
        return None


def tags_to_vector(tags: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Class names -> (K,) uint8 multi-hot; unknown names are refused, listing the known classes."""
    refuse_unknown(tags, classes)
    vector = np.zeros(len(classes), dtype=np.uint8)
    for tag in tags:
        vector[list(classes).index(tag)] = 1
    return vector
