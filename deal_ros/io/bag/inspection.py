"""`deal-ros info`: what a bag holds and whether `train` can use it, decided by reading frames as `train` does."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deal_ros.io.bag.errors import BagError
from deal_ros.io.bag.frames import ReadStats, iter_rgbd_frames
from deal_ros.io.bag.reader import open_bag, read_messages, resolve_bag
from deal_ros.io.bag.topics import COMPRESSED, IMAGE, IMAGE_TYPES, TopicChoice, select_topics
from deal_ros.io.encodings import DEPTH_ENCODINGS, RGB_INPUT_ENCODINGS, is_compressed
from deal_ros.io.pairs import size_mismatch

__all__ = ["CHECK_FRAMES", "BagInfo", "TopicStats", "inspect_bag"]

CHECK_FRAMES = 200
"""inspect_bag decodes frames until this many are usable (all of the bag when fewer are)."""


@dataclass
class TopicStats:
    name: str
    msgtype: str
    count: int
    rate_hz: float
    """Mean rate over the whole bag, (count - 1) / duration."""
    encoding: str | None = None
    """Image encoding (or CompressedImage format) of the first message; None for other types."""
    width: int | None = None
    height: int | None = None


@dataclass
class BagInfo:
    path: str
    storage: str
    start_ns: int
    end_ns: int
    duration_s: float
    message_count: int
    topics: list[TopicStats]
    choice: TopicChoice | None
    usable: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames_usable: int | None = None
    """Frames `train` would get, counted over the first CHECK_FRAMES usable ones (None: not checked)."""
    frames_skipped: dict[str, int] = field(default_factory=dict)
    """Synchronised frames that `train` would skip, by reason, among those read for frames_usable."""

    def topic(self, name: str) -> TopicStats | None:
        return next((t for t in self.topics if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_bag(path: str | Path) -> BagInfo:
    """Topics, types, counts, rates, first-message encodings and whether the bag can be trained on."""
    notes = ReadStats()
    _, storage = resolve_bag(path, notes.warn)
    with open_bag(path, notes.warn) as reader:
        start_ns, end_ns = int(reader.start_time), int(reader.end_time)
        duration_s = max(end_ns - start_ns, 0) / 1e9
        stats = [_topic_stats(reader, path, name, info, duration_s) for name, info in sorted(reader.topics.items())]
        message_count = int(reader.message_count)

    bag = BagInfo(str(path), storage, start_ns, end_ns, round(duration_s, 3), message_count, stats, None, False,
                  warnings=list(notes.warnings))
    try:
        choice = select_topics({t.name: t.msgtype for t in stats})
    except BagError as exc:
        bag.problems.append(str(exc))
        return bag
    bag.choice = choice
    bag.warnings += choice.warnings
    _check_encodings(bag, choice)
    if choice.tags_topic is None:
        bag.warnings.append("no tags topic (std_msgs/String named 'tags'): give the tags or a tag schedule")
    if not bag.problems:
        _check_frames(path, choice, bag)
    bag.usable = not bag.problems
    return bag


def _topic_stats(reader: Any, path: str | Path, name: str, info: Any, duration_s: float) -> TopicStats:
    """Count and mean rate of one topic; encoding and size of its first message for image topics."""
    msgtype = info.msgtype or "?"
    rate = (info.msgcount - 1) / duration_s if info.msgcount > 1 and duration_s > 0 else 0.0
    entry = TopicStats(name, msgtype, int(info.msgcount), round(rate, 3))
    if msgtype in IMAGE_TYPES and info.msgcount:
        for conn, _, raw in read_messages(reader, info.connections, path):
            entry.encoding, entry.width, entry.height = _layout(reader.deserialize(raw, conn.msgtype))
            break
    return entry


def _check_encodings(bag: BagInfo, choice: TopicChoice) -> None:
    """Problems with the chosen topics' encodings and sizes (from their first message)."""
    rgb, depth = bag.topic(choice.rgb_topic), bag.topic(choice.depth_topic)
    assert rgb is not None and depth is not None  # select_topics chose them among these topics
    if rgb.msgtype == IMAGE and rgb.encoding not in RGB_INPUT_ENCODINGS:
        bag.problems.append(f"RGB topic {rgb.name} has encoding {rgb.encoding!r}, not a colour encoding")
    if depth.msgtype == IMAGE and depth.encoding not in DEPTH_ENCODINGS:
        bag.problems.append(
            f"depth topic {depth.name} has encoding {depth.encoding!r}; need {', '.join(DEPTH_ENCODINGS)}"
        )
    if depth.msgtype == COMPRESSED and "compressedDepth" not in (depth.encoding or ""):
        bag.problems.append(
            f"depth topic {depth.name} is lossy-compressed ({depth.encoding!r}); need compressedDepth"
        )
    if rgb.width and depth.width and rgb.height and depth.height:
        mismatch = size_mismatch((rgb.width, rgb.height), (depth.width, depth.height))
        if mismatch:  # every pair is refused, as the nodes refuse it
            bag.problems.append(f"{rgb.name} and {depth.name}: {mismatch}")


def _check_frames(path: str | Path, choice: TopicChoice, bag: BagInfo) -> None:
    """Read frames as `train` would (sync, decode, depth checks) so that the verdict agrees with what it does.

    With a tags topic, `train` takes its tags from it: frames before its first message are skipped as they
    are there, and a topic that names no class at any frame (only empty messages) leaves nothing to learn.
    """
    stats = ReadStats()
    frames = iter_rgbd_frames(path, choice.rgb_topic, choice.depth_topic, choice.info_topic, choice.tags_topic,
                              require_tags=choice.tags_topic is not None, stats=stats)
    checked = tagged = 0
    try:
        for frame in itertools.islice(frames, CHECK_FRAMES):
            checked += 1
            tagged += bool(frame.tags)
    except BagError as exc:
        bag.problems.append(str(exc))
        return
    finally:
        frames.close()
    bag.frames_usable, bag.frames_skipped = stats.frames, dict(stats.skipped)
    bag.warnings += [w for w in stats.warnings if w not in bag.warnings]
    skips = "; ".join(stats.skip_reasons())
    if stats.frames == 0:
        bag.problems.append(f"no usable RGB-D frame: {skips or 'no RGB/depth pair within the sync slop'}")
    elif skips:
        bag.warnings.append(f"{stats.frames} usable frame(s) checked; skipped: {skips}")
    if choice.tags_topic is not None and checked and not tagged:
        untagged = (f"tags topic {choice.tags_topic} names no class at any of the {checked} frame(s) (its messages "
                    "are empty: nothing in view), so training has no class to learn; give --tags or a tag schedule")
        if checked < CHECK_FRAMES:  # every frame of the bag was read
            bag.problems.append(untagged)
        else:
            bag.warnings.append(untagged.replace("frame(s)", "first frame(s)", 1))


def _layout(msg: Any) -> tuple[str, int | None, int | None]:
    """(encoding, width, height) of an Image; (format, None, None) of a CompressedImage."""
    if is_compressed(msg):
        return str(msg.format), None, None
    return str(msg.encoding), int(msg.width), int(msg.height)
