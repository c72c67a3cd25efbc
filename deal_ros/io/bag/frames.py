"""Synchronised, tagged RGB-D frames from bags, paired and tagged as the online trainer does.

RGB and depth are paired with the approximate time synchroniser of :mod:`deal_ros.io.sync`, tags
are attached as the node attaches them (the latest value when the colour image arrives, read by the
one lenient tags reader), a pair whose sizes differ is refused with the node's words
(:mod:`deal_ros.io.pairs`), and every frame that is not produced is counted by reason in :class:`ReadStats`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.config import SyncConfig
from deal_ros.frames.checks import DEPTH_NOT_METRES, depth_problem
from deal_ros.frames.tags import TagSchedule, UnknownTagError, parse_tags
from deal_ros.io.bag.errors import BagError, deserialize_errors
from deal_ros.io.bag.reader import (
    camera_intrinsics,
    first_camera_info,
    open_bag,
    read_messages,
    resolve_bag,
    stamp_ns,
    topic_types,
)
from deal_ros.io.bag.topics import STRING, TopicChoice, select_topics
from deal_ros.io.encodings import FLOAT_DEPTH_UNITS_M
from deal_ros.io.image_codec import ImageDecodeError, decode_depth_m, decode_rgb
from deal_ros.io.pairs import size_mismatch
from deal_ros.io.sync import ApproximateTimeSync

__all__ = ["FrameQuery", "RGBDFrame", "ReadStats", "iter_rgbd_frames"]

log = logging.getLogger("deal_ros.io.bag")

FrameTags = list[str] | UnknownTagError | None
"""Tags that apply to a colour image: names, the error of a tags message naming unknown classes, None = unknown."""


@dataclass
class RGBDFrame:
    """One synchronised RGB-D frame. Arrays may be read-only views of the message: copy to modify."""

    stamp_ns: int
    """Header stamp of the colour image."""
    rgb: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth_m: np.ndarray
    """(H, W) float32 metres, 0.0 = hole; same H, W as rgb."""
    tags: list[str]
    frame_id: str
    intrinsics: np.ndarray | None
    """3x3 K of the colour camera (camera_info), None when the bag has none."""
    index: int
    """Running number of the frames yielded by one iter_rgbd_frames call."""
    log_ns: int = 0
    """Record (receive) time of the colour message in the bag, e.g. to write derived topics beside it."""
    tags_known: bool = True
    """False when no tags applied to this frame (require_tags=False gave tags = [] for it)."""


@dataclass
class ReadStats:
    """What iter_rgbd_frames did: frames yielded, frames skipped by reason, warnings; print summary()."""

    frames: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    """The first message of each skip reason, to show the user what went wrong."""
    messages: Counter[str] = field(default_factory=Counter)
    """Messages read per topic."""
    warnings: list[str] = field(default_factory=list)
    bags: list[str] = field(default_factory=list)

    def skip(self, reason: str, example: str = "") -> None:
        self.skipped[reason] += 1
        if example and reason not in self.examples:
            self.examples[reason] = example

    def skip_reasons(self, example: Callable[[str], str] = str) -> list[str]:
        """'reason count (e.g. example)' per skip reason, sorted; `example` shapes the example text."""
        return [f"{reason} {count}" + (f" (e.g. {example(self.examples[reason])})" if reason in self.examples else "")
                for reason, count in sorted(self.skipped.items())]

    def warn(self, text: str) -> None:
        """Warn once per distinct text (logged and kept)."""
        if text not in self.warnings:
            self.warnings.append(text)
            log.warning(text)

    def summary(self) -> str:
        lines = [f"{self.frames} frame(s) from {len(self.bags)} bag(s)"]
        for reason, count in sorted(self.skipped.items()):
            example = self.examples.get(reason)
            lines.append(f"  skipped {count:6d}  {reason}" + (f"  (e.g. {example})" if example else ""))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class FrameQuery:
    """What iter_rgbd_frames reads: topics (None = chosen by select_topics), pairing, tags.

    Checked when made (ValueError, or UnknownTagError for tags outside `classes`), so that a bad
    argument fails at the call and not after other bags were read.
    """

    rgb_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    tags_topic: str | None = None
    sync: SyncConfig = field(default_factory=SyncConfig)
    """Pairing: queue size and slop of the nodes' synchroniser (the config's sync section)."""
    tags: tuple[str, ...] | TagSchedule | None = None
    """Tags of every frame, or tags over bag time; None: the bag's tags topic."""
    classes: tuple[str, ...] | None = None
    require_tags: bool = True
    skip_degenerate_depth: bool = True
    depth_float_unit: str = "m"
    """Unit of 32FC1 depth (the setting depth.float_unit): 'm' (REP 118) or 'mm'."""

    def __post_init__(self) -> None:
        if self.depth_float_unit not in FLOAT_DEPTH_UNITS_M:
            raise BagError(f"depth_float_unit must be one of {list(FLOAT_DEPTH_UNITS_M)}, "
                           f"got {self.depth_float_unit!r}")
        if self.classes is not None:
            if isinstance(self.tags, TagSchedule):
                self.tags.validate(self.classes)
            elif self.tags is not None:
                parse_tags(self.tags, self.classes)  # raises UnknownTagError

    @property
    def tags_from_topic(self) -> bool:
        return self.tags is None


def iter_rgbd_frames(
    paths: str | Path | Sequence[str | Path],
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    tags_topic: str | None = None,
    *,
    sync: SyncConfig | None = None,
    tags: Sequence[str] | str | TagSchedule | None = None,
    classes: Sequence[str] | None = None,
    require_tags: bool = True,
    stats: ReadStats | None = None,
    skip_degenerate_depth: bool = True,
    depth_float_unit: str = "m",
) -> Generator[RGBDFrame, None, None]:
    """Synchronised, tagged RGB-D frames from one or more bags (read one after the other).

    RGB and depth are paired as the nodes pair them, with `sync` (the config's sync section; None = its defaults).
    Tags come from `tags` when given (a fixed list or 'mug, box' for the whole bag, or a
    TagSchedule over bag time), else from the bag's std_msgs/String tags topic (the latest value
    when the colour image arrives). With `classes`, unknown names in `tags` raise UnknownTagError
    at once; unknown names on the tags topic skip the frames they apply to (reason 'unknown_tag'),
    or with require_tags=False give them no tags (tags_known=False, warned once per name set).
    Frames without tags are skipped ('no_tags') unless require_tags=False (then tags = []).
    Depth with no valid pixel or one value everywhere trains nothing: such frames are skipped
    ('depth_no_valid', 'depth_constant') unless skip_degenerate_depth=False (then warned once). Depth that
    cannot be metres (32FC1 millimetres read with depth_float_unit 'm') stops the read with a BagError that
    names the likely unit, whatever skip_degenerate_depth says: train and label read it alike.
    Every pair is a frame: choosing keyframes is deal_ros.online.keyframes' job, as on the robot. A pair
    whose depth and RGB sizes differ is skipped ('size_mismatch', with the message the nodes log), as the
    nodes refuse it: depth is never resized onto colour.
    Pass a ReadStats to get the counts. Arguments are checked here, the bags when iterated.
    """
    query = FrameQuery(
        rgb_topic, depth_topic, info_topic, tags_topic,
        sync=sync if sync is not None else SyncConfig(),
        tags=tags if tags is None or isinstance(tags, TagSchedule) else tuple(parse_tags(tags)),
        classes=None if classes is None else tuple(classes),
        require_tags=require_tags, skip_degenerate_depth=skip_degenerate_depth,
        depth_float_unit=depth_float_unit,
    )
    bag_paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not bag_paths:
        raise BagError("no bag given")
    for path in bag_paths:
        resolve_bag(path)  # a missing or unknown path fails now, not after other bags were read
    return _frames(bag_paths, query, stats if stats is not None else ReadStats())


def _frames(bag_paths: list[str | Path], query: FrameQuery, stats: ReadStats) -> Generator[RGBDFrame, None, None]:
    index = 0
    for path in bag_paths:
        stats.bags.append(str(path))
        with open_bag(path, stats.warn) as reader:
            bag = _BagPass(reader, str(path), query, stats)
            for conn, log_ns, raw in read_messages(reader, bag.connections, path):
                pair = bag.add(conn, log_ns, raw)
                if pair is None:
                    continue
                frame = bag.frame(pair, index)
                if frame is None:
                    continue
                stats.frames += 1
                yield frame
                index += 1
            bag.finish()


_Pair = tuple[tuple[int, Any], ...]
"""A synchroniser match: ((stamp_ns, (rgb_msg, tags, rgb_log_ns)), (stamp_ns, depth_msg))."""


class _BagPass:
    """One reading of one bag: the chosen topics, the latest tags and camera_info, the synchroniser."""

    def __init__(self, reader: Any, path: str, query: FrameQuery, stats: ReadStats) -> None:
        self.reader, self.path, self.query, self.stats = reader, path, query, stats
        topics = topic_types(reader)
        choice = select_topics(topics, query.rgb_topic, query.depth_topic, query.info_topic, query.tags_topic,
                               query.tags_from_topic)
        for text in choice.warnings:
            stats.warn(f"{path}: {text}")
        if query.tags_from_topic and choice.tags_topic is None and query.require_tags:
            strings = sorted(t for t, m in topics.items() if m == STRING)
            raise BagError(
                f"bag {path} has no tags topic (std_msgs/String named 'tags'; String topics: "
                f"{', '.join(strings) or 'none'}): give the tags for the whole bag, a tag schedule, "
                "or the tags topic"
            )
        log.info("reading %s: %s", path, "; ".join(choice.reasons))
        wanted = {choice.rgb_topic, choice.depth_topic, choice.info_topic}
        if query.tags_from_topic:
            wanted.add(choice.tags_topic)
        self.choice: TopicChoice = choice
        self.connections = [c for c in reader.connections if c.topic in wanted]
        self.bag_start_ns = int(reader.start_time)
        self.sync: ApproximateTimeSync[Any] = ApproximateTimeSync(2, query.sync.queue_size, query.sync.slop)
        self.topic_tags: FrameTags = None
        # camera_info is constant in practice: start from the first one, so that the first
        # frames have intrinsics even when their camera_info is stored after them
        self.intrinsics, self.info_size = first_camera_info(reader, choice.info_topic, path)

    def add(self, conn: Any, log_ns: int, raw: Any) -> _Pair | None:
        """Take one message; returns the RGB-D pair it completes, if any."""
        topic, choice = conn.topic, self.choice
        self.stats.messages[topic] += 1
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
        except deserialize_errors() as exc:
            self.stats.skip("deserialize_error", f"{topic}: {exc}")
            return None
        if topic == choice.tags_topic and self.query.tags_from_topic:
            try:
                self.topic_tags = parse_tags(str(msg.data), self.query.classes)
            except UnknownTagError as exc:
                self.topic_tags = exc
            return None
        if topic == choice.info_topic:
            self.intrinsics = camera_intrinsics(msg)
            self.info_size = (int(msg.width), int(msg.height))
            return None
        if topic == choice.rgb_topic:
            return self.sync.add(0, stamp_ns(msg), (msg, self._tags_at(log_ns), log_ns))
        return self.sync.add(1, stamp_ns(msg), msg)

    def _tags_at(self, log_ns: int) -> FrameTags:
        tags = self.query.tags
        if isinstance(tags, TagSchedule):
            return tags.tags_at(log_ns, self.bag_start_ns)
        return self.topic_tags if tags is None else list(tags)

    def frame(self, pair: _Pair, index: int) -> RGBDFrame | None:
        """The frame of a synchronised pair, or None when it is skipped (counted in stats)."""
        (frame_stamp_ns, (rgb_msg, tags, rgb_log_ns)), (_, depth_msg) = pair
        query, stats = self.query, self.stats
        if isinstance(tags, UnknownTagError):
            if query.require_tags:
                stats.skip("unknown_tag", str(tags))
                return None
            stats.warn(f"{self.path}: {tags}: frames with these tags get no pseudo-label")
            tags = None
        tags_known = tags is not None
        if tags is None:
            if query.require_tags:
                stats.skip("no_tags", "no tags known yet at this time")
                return None
            tags = []
        decoded = self._decode(rgb_msg, depth_msg, frame_stamp_ns)
        if decoded is None:
            return None
        rgb, depth_m = decoded
        frame_id = str(rgb_msg.header.frame_id)
        self._warn_geometry(rgb, frame_id, str(depth_msg.header.frame_id))
        return RGBDFrame(frame_stamp_ns, rgb, depth_m, list(tags), frame_id, self.intrinsics, index, rgb_log_ns,
                         tags_known)

    def _decode(self, rgb_msg: Any, depth_msg: Any, frame_stamp_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(rgb, depth_m) of the pair at colour size, or None when undecodable or degenerate (counted)."""
        choice, stats = self.choice, self.stats
        try:
            rgb = decode_rgb(rgb_msg, choice.rgb_topic)
            depth_m = decode_depth_m(depth_msg, choice.depth_topic, self.query.depth_float_unit)
        except ImageDecodeError as exc:
            stats.skip("decode_error", str(exc))
            return None
        mismatch = size_mismatch((rgb.shape[1], rgb.shape[0]), (depth_m.shape[1], depth_m.shape[0]))
        if mismatch:
            stats.skip("size_mismatch", mismatch)
            return None
        problem = depth_problem(depth_m, f"{choice.depth_topic} at {frame_stamp_ns / 1e9:.3f} s")
        if problem is not None and problem.reason == DEPTH_NOT_METRES:
            raise BagError(f"{self.path}: {problem}")
        if problem is not None:
            if self.query.skip_degenerate_depth:
                stats.skip(problem.reason, str(problem))
                return None
            stats.warn(f"{self.path}: some frames have degenerate depth ({problem.reason}); they are kept, "
                       "but depth cannot refine their pseudo-labels")
        return rgb, depth_m

    def _warn_geometry(self, rgb: np.ndarray, frame_id: str, depth_frame: str) -> None:
        """Warn (once) when depth may not be aligned to colour or camera_info does not fit the image."""
        if depth_frame != frame_id and self.choice.depth_aligned is not True:
            self.stats.warn(
                f"{self.path}: depth frame_id {depth_frame!r} differs from colour frame_id "
                f"{frame_id!r}: depth must be aligned to colour"
            )
        k_size = self.info_size
        if self.intrinsics is not None and k_size is not None and k_size != (rgb.shape[1], rgb.shape[0]):
            self.stats.warn(
                f"{self.path}: camera_info is for {k_size[0]}x{k_size[1]} but RGB is "
                f"{rgb.shape[1]}x{rgb.shape[0]}: intrinsics do not match the image"
            )

    def finish(self) -> None:
        """Count the colour and depth messages that never found a partner."""
        sync_stats = self.sync.finish()
        for reason, count in (("unmatched_rgb", sync_stats.dropped[0]), ("unmatched_depth", sync_stats.dropped[1])):
            if count:
                self.stats.skipped[reason] += count

