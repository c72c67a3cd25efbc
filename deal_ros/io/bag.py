"""Reading RGB-D frames and tags from rosbags (rosbag2 sqlite3 / mcap, ROS 1 .bag) without ROS.

Uses the pure-Python ``rosbags`` library. RGB and depth are paired with the same approximate time
synchroniser as the online trainer (:mod:`deal_ros.io.sync`), tags are attached as the node does
(the latest value when the colour image arrives), and every frame that is not produced is counted
by reason in :class:`ReadStats`. User errors (missing file, empty or corrupt bag, missing topic)
raise :class:`BagError` with a message meant for a person, never a traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sqlite3
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from deal_ros.data_checks import depth_problem
from deal_ros.errors import DealRosError
from deal_ros.io.image_codec import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ImageDecodeError,
    decode_depth_m,
    decode_rgb,
)
from deal_ros.io.sync import ApproximateTimeSync
from deal_ros.tags import TagSchedule, UnknownTagError, parse_tags

__all__ = [
    "BagError",
    "BagInfo",
    "RGBDFrame",
    "ReadStats",
    "TopicChoice",
    "TopicStats",
    "find_tags_topic",
    "inspect_bag",
    "iter_rgbd_frames",
    "open_bag",
    "prefetch",
    "read_messages",
    "scan_tag_names",
    "select_topics",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED)


class BagError(DealRosError, ValueError):
    """A bag cannot be used as asked (missing, empty, corrupt, topic absent); a one-line user message."""


@dataclass(frozen=True)
class CameraProfile:
    """Default topic names of one camera driver; the first profile present in a bag wins."""

    name: str
    rgb: str
    aligned_depth: tuple[str, ...]
    unaligned_depth: tuple[str, ...]
    info: str


PROFILES: tuple[CameraProfile, ...] = (
    CameraProfile(
        "RealSense (realsense2_camera, /camera)",
        "/camera/color/image_raw",
        ("/camera/aligned_depth_to_color/image_raw",),
        ("/camera/depth/image_rect_raw",),
        "/camera/color/camera_info",
    ),
    CameraProfile(
        "RealSense (realsense2_camera >= 4.54, /camera/camera)",
        "/camera/camera/color/image_raw",
        ("/camera/camera/aligned_depth_to_color/image_raw",),
        ("/camera/camera/depth/image_rect_raw",),
        "/camera/camera/color/camera_info",
    ),
    CameraProfile(
        "ZED (zed_wrapper)",
        "/zed/zed_node/rgb/image_rect_color",
        ("/zed/zed_node/depth/depth_registered",),
        (),
        "/zed/zed_node/rgb/camera_info",
    ),
    CameraProfile(
        "ZED 2 (zed_wrapper, /zed2)",
        "/zed2/zed_node/rgb/image_rect_color",
        ("/zed2/zed_node/depth/depth_registered",),
        (),
        "/zed2/zed_node/rgb/camera_info",
    ),
    CameraProfile(
        "OAK (depthai_ros_driver)",
        "/oak/rgb/image_raw",
        ("/oak/stereo/image_raw",),
        (),
        "/oak/rgb/camera_info",
    ),
)
TAG_TOPICS = ("/tags", "/deal_ros/tags")


# --------------------------------------------------------------------------------------------
# Results


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
class TopicChoice:
    """The topics iter_rgbd_frames would use, and why."""

    rgb_topic: str
    depth_topic: str
    info_topic: str | None
    tags_topic: str | None
    depth_aligned: bool | None
    """True for aligned/registered depth, False for raw depth of another sensor, None unknown."""
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


# --------------------------------------------------------------------------------------------
# Opening bags


def _default_typestore() -> Any:
    """Definitions for bags that carry none (Humble sqlite3); our types are equal on Humble and Jazzy."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _reader_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file is not a readable bag" (truncated, corrupt, wrong format)."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error
    from rosbags.serde import SerdeError

    errors: tuple[type[BaseException], ...] = (
        AnyReaderError,
        Reader1Error,
        Reader2Error,
        SerdeError,
        sqlite3.DatabaseError,
        struct.error,
        EOFError,
        UnicodeDecodeError,
        KeyError,
        IndexError,
        AssertionError,
        OSError,
        ValueError,
    )
    try:
        import apsw  # rosbags' sqlite3 binding

        errors += (apsw.Error,)
    except ImportError:
        pass
    return errors


_RECOVERY_HINT = (
    "if the recording was interrupted, repair it first: `mcap recover` for .mcap, "
    "`ros2 bag reindex` when metadata.yaml is missing"
)


def _resolve(path: str | Path, stats: ReadStats | None = None) -> tuple[list[Path], str]:
    """A user's bag path -> the paths AnyReader opens, and the storage name."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_file() and path.name == "metadata.yaml":
        path = path.parent
    if path.is_dir():
        metadata = path / "metadata.yaml"
        files = sorted([*path.glob("*.db3"), *path.glob("*.mcap")])
        if metadata.is_file():
            text = metadata.read_text(errors="replace")
            storage = "mcap" if "storage_identifier: mcap" in text else "sqlite3"
            return [path], storage
        if not files:
            raise BagError(
                f"{path} is a directory without metadata.yaml or .db3/.mcap files: not a rosbag2 bag"
            )
        note = (
            f"{path} has no metadata.yaml (was the recording interrupted?); "
            f"reading {', '.join(f.name for f in files)} directly"
        )
        if stats is not None:
            stats.warn(note)
        else:
            log.warning(note)
        return files, "mcap" if files[0].suffix == ".mcap" else "sqlite3"
    storage = {".db3": "sqlite3", ".mcap": "mcap", ".bag": "rosbag1"}.get(path.suffix)
    if storage is None:
        raise BagError(f"{path}: not a bag (expected a rosbag2 directory, a .db3, .mcap or ROS 1 .bag file)")
    return [path], storage


@contextmanager
def _open(path: str | Path, stats: ReadStats | None = None) -> Iterator[Any]:
    """Open a bag with AnyReader; any failure to read it becomes a BagError naming the file."""
    from rosbags.highlevel import AnyReader

    paths, _ = _resolve(path, stats)
    try:
        reader = AnyReader(paths, default_typestore=_default_typestore())
        reader.open()
    except _reader_errors() as exc:
        raise BagError(
            f"cannot read bag {path}: it is truncated or corrupt, or not a bag "
            f"({type(exc).__name__}: {exc}); "
            f"{_RECOVERY_HINT}"
        ) from None
    try:
        if reader.message_count == 0:
            raise BagError(f"bag {path} contains no messages")
        yield reader
    finally:
        try:
            reader.close()
        except _reader_errors():
            pass


def _messages(reader: Any, connections: Sequence[Any], path: str | Path) -> Iterator[tuple[Any, int, Any]]:
    """reader.messages() whose storage errors become BagError (a bag cut off while recording)."""
    count = 0
    it = reader.messages(connections=connections)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except _reader_errors() as exc:
            raise BagError(
                f"bag {path} is truncated or corrupt after {count} message(s) ({type(exc).__name__}: {exc}); "
                f"{_RECOVERY_HINT}"
            ) from None
        count += 1
        yield item


def open_bag(path: str | Path) -> contextlib.AbstractContextManager[Any]:
    """An open rosbags AnyReader for `path` (``with open_bag(p) as reader``); failures are BagError."""
    return _open(path)


def read_messages(reader: Any, connections: Sequence[Any], path: str | Path) -> Iterator[tuple[Any, int, Any]]:
    """(connection, record time ns, raw bytes) in record-time order; a truncated bag raises BagError."""
    return _messages(reader, connections, path)


def scan_tag_names(paths: str | Path | Sequence[str | Path], tags_topic: str | None = None,
                   ) -> tuple[str | None, list[str]]:
    """The tags topic (given, or found as select_topics would) and every tag name on it, in order of appearance.

    Lets a command default the class list to the names the operator actually published.
    Returns (None, []) when no bag has a tags topic.
    """
    bag_paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    names: list[str] = []
    found: str | None = None
    for path in bag_paths:
        with _open(path) as reader:
            topics = {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}
            topic = tags_topic if tags_topic is not None else find_tags_topic(topics)
            if topic is None:
                continue
            _require(topics, topic, (STRING,), "tags")
            found = topic
            connections = [c for c in reader.connections if c.topic == topic]
            for conn, _, raw in _messages(reader, connections, path):
                for name in parse_tags(str(reader.deserialize(raw, conn.msgtype).data)):
                    if name not in names:
                        names.append(name)
    return found, names


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _intrinsics(msg: Any) -> np.ndarray | None:
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K", None)  # ROS 1 CameraInfo
    if k is None:
        return None
    matrix = np.asarray(k, dtype=np.float64).reshape(3, 3)
    return None if not matrix.any() else matrix


def _first_camera_info(
    reader: Any, topic: str | None, path: str | Path
) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    if topic is None:
        return None, None
    connections = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in _messages(reader, connections, path):
        msg = reader.deserialize(raw, conn.msgtype)
        return _intrinsics(msg), (int(msg.width), int(msg.height))
    return None, None


def _image_signature(msg: Any) -> tuple[str, int | None, int | None]:
    if hasattr(msg, "encoding"):
        return str(msg.encoding), int(msg.width), int(msg.height)
    return str(msg.format), None, None


# --------------------------------------------------------------------------------------------
# Topic selection


def _base(topic: str) -> str:
    """The raw image topic of an image_transport topic (…/compressed, …/compressedDepth)."""
    for suffix in ("/compressed", "/compressedDepth"):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    return topic


def _namespace(topic: str) -> str:
    return _base(topic).rsplit("/", 1)[0]


def _prefer_raw(topics: list[str]) -> list[str]:
    """Drop compressed variants whose raw topic is also recorded (raw is cheaper to decode)."""
    present = set(topics)
    return [t for t in topics if t == _base(t) or _base(t) not in present]


def _with_transport(topics: dict[str, str], base: str, suffix: str) -> str | None:
    """The raw topic if present, else its image_transport variant (raw is cheaper to decode)."""
    if topics.get(base) == IMAGE:
        return base
    if topics.get(base + suffix) == COMPRESSED:
        return base + suffix
    return None


def _image_topics(topics: dict[str, str]) -> list[str]:
    return sorted(name for name, msgtype in topics.items() if msgtype in IMAGE_TYPES)


def _require(topics: dict[str, str], name: str, allowed: tuple[str, ...], role: str) -> None:
    if name not in topics:
        images = _image_topics(topics)
        listing = ", ".join(images) if images else "none"
        raise BagError(f"{role} topic {name} is not in the bag; image topics in the bag: {listing}")
    if topics[name] not in allowed:
        raise BagError(f"{role} topic {name} has type {topics[name]}, expected {' or '.join(allowed)}")


def find_tags_topic(topics: dict[str, str]) -> str | None:
    """The std_msgs/String topic named 'tags' in ``{topic: msgtype}`` (TAG_TOPICS first), or None."""
    strings = sorted(t for t, m in topics.items() if m == STRING)
    named = [t for t in TAG_TOPICS if t in strings] or [t for t in strings if t.rsplit("/", 1)[-1] == "tags"]
    return named[0] if named else None


def select_topics(
    topics: dict[str, str],
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    tags_topic: str | None = None,
    want_tags_topic: bool = True,
) -> TopicChoice:
    """Pick RGB / depth / camera_info / tags topics from ``{topic: msgtype}``.

    Given names are checked; missing ones are chosen from the usual driver names (RealSense, ZED,
    OAK, raw before compressed), preferring depth aligned to colour, then by name heuristics.
    Raises BagError (listing the bag's image topics) when no RGB or depth topic can be found.
    """
    reasons: list[str] = []
    warnings: list[str] = []
    aligned: bool | None = None
    if rgb_topic is not None:
        _require(topics, rgb_topic, IMAGE_TYPES, "RGB")
        reasons.append(f"RGB {rgb_topic}: given")
    if depth_topic is not None:
        _require(topics, depth_topic, IMAGE_TYPES, "depth")
        reasons.append(f"depth {depth_topic}: given")
        unaligned = {name for profile in PROFILES for name in profile.unaligned_depth}
        aligned = False if _base(depth_topic) in unaligned else None
    profile_info: str | None = None
    if rgb_topic is None or depth_topic is None:
        for profile in PROFILES:
            rgb = _with_transport(topics, profile.rgb, "/compressed")
            if rgb_topic is not None and rgb_topic != rgb:
                continue
            if rgb is None:
                continue
            depth, depth_aligned = None, None
            for candidate in profile.aligned_depth:
                depth = depth or _with_transport(topics, candidate, "/compressedDepth")
                depth_aligned = True if depth else None
            if depth is None:
                for candidate in profile.unaligned_depth:
                    depth = depth or _with_transport(topics, candidate, "/compressedDepth")
                    depth_aligned = False if depth else None
            if depth_topic is None and depth is None:
                continue
            if rgb_topic is None:
                rgb_topic = rgb
                reasons.append(f"RGB {rgb}: default name of {profile.name}")
            if depth_topic is None and depth is not None:
                depth_topic, aligned = depth, depth_aligned
                kind = "aligned to colour" if depth_aligned else "NOT aligned to colour"
                reasons.append(f"depth {depth}: default name of {profile.name}, {kind}")
            profile_info = profile.info
            break
    images = _prefer_raw(_image_topics(topics))
    if rgb_topic is None:
        colour = [
            t
            for t in images
            if "depth" not in t.lower() and any(k in t.lower() for k in ("color", "colour", "rgb"))
        ]
        if len(colour) == 1:
            rgb_topic = colour[0]
            reasons.append(f"RGB {rgb_topic}: the only colour-named image topic")
    if depth_topic is None:
        depths = [t for t in images if "depth" in t.lower() and t != rgb_topic]
        preferred = [t for t in depths if any(k in t.lower() for k in ("aligned", "registered"))]
        pick = preferred if preferred else depths
        if len(pick) == 1:
            depth_topic = pick[0]
            aligned = True if preferred else None
            reasons.append(
                f"depth {depth_topic}: the only {'aligned ' if preferred else ''}depth-named image topic"
            )
    listing = ", ".join(images) if images else "none"
    if rgb_topic is None:
        raise BagError(f"no RGB topic found automatically; image topics in the bag: {listing} (choose one)")
    if depth_topic is None:
        raise BagError(f"no depth topic found automatically; image topics in the bag: {listing} (choose one)")
    if aligned is False:
        warnings.append(
            f"only unaligned depth ({depth_topic}) is recorded: DEAL needs depth aligned to colour "
            "(RealSense: align_depth.enable:=true); depth will be resized, edges will not line up"
        )

    if info_topic is not None:
        _require(topics, info_topic, (CAMERA_INFO,), "camera_info")
        reasons.append(f"camera_info {info_topic}: given")
    else:
        for candidate in (_namespace(rgb_topic) + "/camera_info", profile_info):
            if candidate and topics.get(candidate) == CAMERA_INFO:
                info_topic = candidate
                reasons.append(f"camera_info {candidate}: beside the RGB topic")
                break
        else:
            warnings.append(f"no camera_info for {rgb_topic}: frames will have no intrinsics")

    if want_tags_topic:
        if tags_topic is not None:
            _require(topics, tags_topic, (STRING,), "tags")
            reasons.append(f"tags {tags_topic}: given")
        else:
            tags_topic = find_tags_topic(topics)
            if tags_topic is not None:
                reasons.append(f"tags {tags_topic}: std_msgs/String topic named 'tags'")
    return TopicChoice(rgb_topic, depth_topic, info_topic, tags_topic, aligned, reasons, warnings)


# --------------------------------------------------------------------------------------------
# Inspection


def inspect_bag(path: str | Path) -> BagInfo:
    """Topics, types, counts, rates, first-message encodings and whether the bag can be trained on."""
    notes = ReadStats()
    _, storage = _resolve(path, notes)
    with _open(path, notes) as reader:
        start_ns, end_ns = int(reader.start_time), int(reader.end_time)
        duration_s = max(end_ns - start_ns, 0) / 1e9
        topic_infos = reader.topics
        stats: list[TopicStats] = []
        for name, info in sorted(topic_infos.items()):
            msgtype = info.msgtype or "?"
            rate = (info.msgcount - 1) / duration_s if info.msgcount > 1 and duration_s > 0 else 0.0
            entry = TopicStats(name, msgtype, int(info.msgcount), round(rate, 3))
            if msgtype in IMAGE_TYPES and info.msgcount:
                for conn, _, raw in _messages(reader, info.connections, path):
                    entry.encoding, entry.width, entry.height = _image_signature(
                        reader.deserialize(raw, conn.msgtype)
                    )
                    break
            stats.append(entry)
        message_count = int(reader.message_count)

    bag = BagInfo(
        str(path),
        storage,
        start_ns,
        end_ns,
        round(duration_s, 3),
        message_count,
        stats,
        None,
        False,
        warnings=list(notes.warnings),
    )
    try:
        choice = select_topics({t.name: t.msgtype for t in stats})
    except BagError as exc:
        bag.problems.append(str(exc))
        return bag
    bag.choice = choice
    bag.warnings += choice.warnings
    rgb, depth = bag.topic(choice.rgb_topic), bag.topic(choice.depth_topic)
    assert rgb is not None and depth is not None
    if rgb.msgtype == IMAGE and rgb.encoding not in (*COLOR_ENCODINGS, "mono8", "8UC1"):
        bag.problems.append(f"RGB topic {rgb.name} has encoding {rgb.encoding!r}, not a colour encoding")
    if depth.msgtype == IMAGE and depth.encoding not in DEPTH_ENCODINGS:
        bag.problems.append(
            f"depth topic {depth.name} has encoding {depth.encoding!r}; need {', '.join(DEPTH_ENCODINGS)}"
        )
    if depth.msgtype == COMPRESSED and "compressedDepth" not in (depth.encoding or ""):
        bag.problems.append(
            f"depth topic {depth.name} is lossy-compressed ({depth.encoding!r}); need compressedDepth"
        )
    if rgb.width and depth.width and (rgb.width, rgb.height) != (depth.width, depth.height):
        bag.warnings.append(
            f"RGB is {rgb.width}x{rgb.height} but depth is {depth.width}x{depth.height}: "
            "depth will be resized"
        )
    if choice.tags_topic is None:
        bag.warnings.append("no tags topic (std_msgs/String named 'tags'): give the tags or a tag schedule")
    if not bag.problems:
        _check_frames(path, choice, bag)
    bag.usable = not bag.problems
    return bag


CHECK_FRAMES = 200
"""inspect_bag decodes frames until this many are usable (all of the bag when fewer are)."""


def _check_frames(path: str | Path, choice: TopicChoice, bag: BagInfo) -> None:
    """Read frames as `train` would (sync, decode, depth checks) so that the verdict agrees with what it does."""
    stats = ReadStats()
    frames = iter_rgbd_frames(path, choice.rgb_topic, choice.depth_topic, choice.info_topic, choice.tags_topic,
                              require_tags=False, stats=stats)
    try:
        for _ in itertools.islice(frames, CHECK_FRAMES):
            pass
    except BagError as exc:
        bag.problems.append(str(exc))
        return
    finally:
        frames.close()  # type: ignore[attr-defined]
    bag.frames_usable, bag.frames_skipped = stats.frames, dict(stats.skipped)
    bag.warnings += [w for w in stats.warnings if w not in bag.warnings]
    skips = "; ".join(f"{reason} {count}" + (f" (e.g. {stats.examples[reason]})" if reason in stats.examples else "")
                      for reason, count in sorted(stats.skipped.items()))
    if stats.frames == 0:
        bag.problems.append(f"no usable RGB-D frame: {skips or 'no RGB/depth pair within the sync slop'}")
    elif skips:
        bag.warnings.append(f"{stats.frames} usable frame(s) checked; skipped: {skips}")


# --------------------------------------------------------------------------------------------
# Frames


_NO_TAGS = object()


def iter_rgbd_frames(
    paths: str | Path | Sequence[str | Path],
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    tags_topic: str | None = None,
    *,
    slop_s: float = 0.05,
    queue_size: int = 30,
    min_gap_s: float = 0.0,
    tags: Sequence[str] | str | TagSchedule | None = None,
    classes: Sequence[str] | None = None,
    depth_size_policy: str = "resize",
    require_tags: bool = True,
    stats: ReadStats | None = None,
    skip_degenerate_depth: bool = True,
) -> Iterator[RGBDFrame]:
    """Synchronised, tagged RGB-D frames from one or more bags (read one after the other).

    Tags come from `tags` when given (a fixed list or 'mug, box' for the whole bag, or a
    TagSchedule over bag time), else from the bag's std_msgs/String tags topic (the latest value
    when the colour image arrives). With `classes`, unknown names in `tags` raise UnknownTagError
    at once; unknown names on the tags topic skip the frames they apply to (reason 'unknown_tag'),
    or with require_tags=False give them no tags (tags_known=False, warned once per name set).
    Frames without tags are skipped ('no_tags') unless require_tags=False (then tags = []).
    Depth with no valid pixel or one value everywhere trains nothing: such frames are skipped
    ('depth_no_valid', 'depth_constant') unless skip_degenerate_depth=False (then warned once).
    `min_gap_s` drops frames closer than that to the previous one ('min_gap'). When depth and
    RGB sizes differ, 'resize' resizes depth (nearest, warned once), 'refuse' raises BagError.
    Pass a ReadStats to get the counts. Arguments are checked here, the bags when iterated.
    """
    if depth_size_policy not in ("resize", "refuse"):
        raise ValueError(f"depth_size_policy must be 'resize' or 'refuse', got {depth_size_policy!r}")
    if slop_s < 0 or queue_size < 1 or min_gap_s < 0:
        raise ValueError("need slop_s >= 0, queue_size >= 1 and min_gap_s >= 0")
    fixed: list[str] | None = None
    schedule: TagSchedule | None = None
    if isinstance(tags, TagSchedule):
        schedule = tags
        if classes is not None:
            schedule.validate(classes)
    elif tags is not None:
        fixed = parse_tags(tags, classes)
    bag_paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not bag_paths:
        raise BagError("no bag given")
    for p in bag_paths:
        _resolve(p)  # a missing or unknown path fails now, not after other bags were read
    return _iter_frames(
        bag_paths,
        rgb_topic,
        depth_topic,
        info_topic,
        tags_topic,
        slop_s,
        queue_size,
        min_gap_s,
        fixed,
        schedule,
        classes,
        depth_size_policy,
        require_tags,
        stats if stats is not None else ReadStats(),
        skip_degenerate_depth,
    )


def _iter_frames(
    bag_paths: list[str | Path],
    rgb_topic: str | None,
    depth_topic: str | None,
    info_topic: str | None,
    tags_topic: str | None,
    slop_s: float,
    queue_size: int,
    min_gap_s: float,
    fixed: list[str] | None,
    schedule: TagSchedule | None,
    classes: Sequence[str] | None,
    depth_size_policy: str,
    require_tags: bool,
    stats: ReadStats,
    skip_degenerate_depth: bool = True,
) -> Iterator[RGBDFrame]:
    index = 0
    min_gap_ns = int(min_gap_s * 1e9)
    for path in bag_paths:
        stats.bags.append(str(path))
        with _open(path, stats) as reader:
            topics = {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}
            use_topic_tags = fixed is None and schedule is None
            choice = select_topics(topics, rgb_topic, depth_topic, info_topic, tags_topic, use_topic_tags)
            for text in choice.warnings:
                stats.warn(f"{path}: {text}")
            if use_topic_tags and choice.tags_topic is None and require_tags:
                strings = sorted(t for t, m in topics.items() if m == STRING)
                raise BagError(
                    f"bag {path} has no tags topic (std_msgs/String named 'tags'; String topics: "
                    f"{', '.join(strings) or 'none'}): give the tags for the whole bag, a tag schedule, "
                    "or the tags topic"
                )
            log.info("reading %s: %s", path, "; ".join(choice.reasons))
            wanted = {choice.rgb_topic, choice.depth_topic, choice.info_topic}
            if use_topic_tags:
                wanted.add(choice.tags_topic)
            connections = [c for c in reader.connections if c.topic in wanted]
            bag_start_ns = int(reader.start_time)
            sync: ApproximateTimeSync[Any] = ApproximateTimeSync(2, queue_size, slop_s)
            topic_tags: Any = _NO_TAGS  # list[str], _NO_TAGS or an UnknownTagError
            # camera_info is constant in practice: start from the first one, so that the first
            # frames have intrinsics even when their camera_info is stored after them
            intrinsics, info_size = _first_camera_info(reader, choice.info_topic, path)
            last_stamp_ns: int | None = None
            for conn, log_ns, raw in _messages(reader, connections, path):
                topic = conn.topic
                stats.messages[topic] += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except _reader_errors() as exc:
                    stats.skip("deserialize_error", f"{topic}: {exc}")
                    continue
                if topic == choice.tags_topic and use_topic_tags:
                    try:
                        topic_tags = parse_tags(str(msg.data), classes)
                    except UnknownTagError as exc:
                        topic_tags = exc
                    continue
                if topic == choice.info_topic:
                    intrinsics = _intrinsics(msg)
                    info_size = (int(msg.width), int(msg.height))
                    continue
                if topic == choice.rgb_topic:
                    if fixed is not None:
                        frame_tags: Any = fixed
                    elif schedule is not None:
                        frame_tags = schedule.tags_at(log_ns, bag_start_ns)
                        frame_tags = _NO_TAGS if frame_tags is None else frame_tags
                    else:
                        frame_tags = topic_tags
                    match = sync.add(0, _stamp_ns(msg), (msg, frame_tags, log_ns))
                else:
                    match = sync.add(1, _stamp_ns(msg), msg)
                if match is None:
                    continue
                (stamp_ns, (rgb_msg, frame_tags, rgb_log_ns)), (_, depth_msg) = match
                k, k_size = intrinsics, info_size
                if last_stamp_ns is not None and stamp_ns - last_stamp_ns < min_gap_ns:
                    stats.skip("min_gap")
                    continue
                if isinstance(frame_tags, UnknownTagError):
                    if require_tags:
                        stats.skip("unknown_tag", str(frame_tags))
                        continue
                    stats.warn(f"{path}: {frame_tags}: frames with these tags get no pseudo-label")
                    frame_tags = _NO_TAGS
                tags_known = frame_tags is not _NO_TAGS
                if not tags_known:
                    if require_tags:
                        stats.skip("no_tags", "no tags known yet at this time")
                        continue
                    frame_tags = []
                try:
                    rgb = decode_rgb(rgb_msg, choice.rgb_topic)
                    depth_m = decode_depth_m(depth_msg, choice.depth_topic)
                except ImageDecodeError as exc:
                    stats.skip("decode_error", str(exc))
                    continue
                depth_m = _fit_depth(depth_m, rgb, depth_size_policy, choice, stats, str(path))
                problem = depth_problem(depth_m, f"{choice.depth_topic} at {stamp_ns / 1e9:.3f} s")
                if problem is not None:
                    if skip_degenerate_depth:
                        stats.skip(problem.reason, str(problem))
                        continue
                    stats.warn(f"{path}: some frames have degenerate depth ({problem.reason}); they are kept, "
                               "but depth cannot refine their pseudo-labels")
                frame_id = str(rgb_msg.header.frame_id)
                depth_frame = str(depth_msg.header.frame_id)
                if depth_frame != frame_id and choice.depth_aligned is not True:
                    stats.warn(
                        f"{path}: depth frame_id {depth_frame!r} differs from colour frame_id "
                        f"{frame_id!r}: depth must be aligned to colour"
                    )
                if k is not None and k_size is not None and k_size != (rgb.shape[1], rgb.shape[0]):
                    stats.warn(
                        f"{path}: camera_info is for {k_size[0]}x{k_size[1]} but RGB is "
                        f"{rgb.shape[1]}x{rgb.shape[0]}: intrinsics do not match the image"
                    )
                last_stamp_ns = stamp_ns
                stats.frames += 1
                yield RGBDFrame(stamp_ns, rgb, depth_m, list(frame_tags), frame_id, k, index, rgb_log_ns, tags_known)
                index += 1
            sync_stats = sync.finish()
            for reason, count in (
                ("unmatched_rgb", sync_stats.dropped[0]),
                ("unmatched_depth", sync_stats.dropped[1]),
            ):
                if count:
                    stats.skipped[reason] += count


def _fit_depth(
    depth_m: np.ndarray, rgb: np.ndarray, policy: str, choice: TopicChoice, stats: ReadStats, path: str
) -> np.ndarray:
    height, width = rgb.shape[:2]
    if depth_m.shape == (height, width):
        return depth_m
    message = (
        f"{path}: depth {choice.depth_topic} is {depth_m.shape[1]}x{depth_m.shape[0]} but RGB "
        f"{choice.rgb_topic} is {width}x{height}"
    )
    if policy == "refuse":
        raise BagError(message + " (depth must be aligned to colour; or allow resizing)")
    stats.warn(message + ": resizing depth (nearest); record aligned depth for correct edges")
    return cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------
# Background reading


def prefetch(iterator: Iterable[T], max_queue: int = 64) -> Iterator[T]:
    """Run `iterator` in a daemon thread, handing items over through a bounded queue.

    Decoding overlaps with training. Exceptions of the producer are re-raised in the consumer;
    when the consumer stops early (break, close, garbage collection) the producer stops at its
    next item and the source iterator is closed (closing the bag).
    """
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}")
    items: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max_queue)
    stop = threading.Event()
    item_, end_, error_ = 0, 1, 2

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
                if not put((item_, item)):
                    return
            put((end_, None))
        except BaseException as exc:
            put((error_, exc))
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
                if kind == item_:
                    yield value
                elif kind == end_:
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
