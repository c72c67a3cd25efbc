"""Opening bags (rosbag2 sqlite3 / mcap, ROS 1 .bag) with rosbags' AnyReader; read failures become BagError.

Also the small readers the rest of the package needs from a bag: its messages in record-time order,
the tag names on its tags topic, the first camera_info, a message's header stamp and intrinsics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.frames.tags import parse_tags
from deal_ros.io.bag.errors import RECOVERY_HINT, BagError, reader_errors
from deal_ros.io.bag.topics import STRING, find_tags_topic, require_topic

__all__ = [
    "Warn",
    "camera_intrinsics",
    "first_camera_info",
    "open_bag",
    "read_messages",
    "resolve_bag",
    "scan_tag_names",
    "stamp_ns",
    "topic_types",
]

log = logging.getLogger("deal_ros.io.bag")

Warn = Callable[[str], None]
"""Where a note about the bag goes (ReadStats.warn); None logs it."""


def _default_typestore() -> Any:
    """Definitions for bags that carry none (Humble sqlite3); our types are equal on Humble and Jazzy."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def resolve_bag(path: str | Path, warn: Warn | None = None) -> tuple[list[Path], str]:
    """A user's bag path -> the paths AnyReader opens, and the storage name (sqlite3, mcap, rosbag1)."""
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
        (warn or log.warning)(
            f"{path} has no metadata.yaml (was the recording interrupted?); "
            f"reading {', '.join(f.name for f in files)} directly"
        )
        return files, "mcap" if files[0].suffix == ".mcap" else "sqlite3"
    by_suffix = {".db3": "sqlite3", ".mcap": "mcap", ".bag": "rosbag1"}.get(path.suffix)
    if by_suffix is None:
        raise BagError(f"{path}: not a bag (expected a rosbag2 directory, a .db3, .mcap or ROS 1 .bag file)")
    return [path], by_suffix


@contextmanager
def open_bag(path: str | Path, warn: Warn | None = None) -> Iterator[Any]:
    """An open rosbags AnyReader for `path` (``with open_bag(p) as reader``); failures are BagError."""
    from rosbags.highlevel import AnyReader

    paths, _ = resolve_bag(path, warn)
    try:
        reader = AnyReader(paths, default_typestore=_default_typestore())
        reader.open()
    except reader_errors() as exc:
        raise BagError(
            f"cannot read bag {path}: it is truncated or corrupt, or not a bag "
            f"({type(exc).__name__}: {exc}); {RECOVERY_HINT}"
        ) from None
    try:
        if reader.message_count == 0:
            raise BagError(f"bag {path} contains no messages")
        yield reader
    finally:
        try:
            reader.close()
        except reader_errors():
            pass


def read_messages(reader: Any, connections: Sequence[Any], path: str | Path) -> Iterator[tuple[Any, int, Any]]:
    """(connection, record time ns, raw bytes) in record-time order; a truncated bag raises BagError."""
    count = 0
    messages = reader.messages(connections=connections)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except reader_errors() as exc:
            raise BagError(
                f"bag {path} is truncated or corrupt after {count} message(s) ({type(exc).__name__}: {exc}); "
                f"{RECOVERY_HINT}"
            ) from None
        count += 1
        yield item


def topic_types(reader: Any) -> dict[str, str]:
    """``{topic: msgtype}`` of an open reader (what select_topics chooses from)."""
    return {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}


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
        with open_bag(path) as reader:
            topics = topic_types(reader)
            topic = tags_topic if tags_topic is not None else find_tags_topic(topics)
            if topic is None:
                continue
            require_topic(topics, topic, (STRING,), "tags")
            found = topic
            connections = [c for c in reader.connections if c.topic == topic]
            for conn, _, raw in read_messages(reader, connections, path):
                for name in parse_tags(str(reader.deserialize(raw, conn.msgtype).data)):
                    if name not in names:
                        names.append(name)
    return found, names


def stamp_ns(msg: Any) -> int:
    """The header stamp of a message in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def camera_intrinsics(msg: Any) -> np.ndarray | None:
    """3x3 K of a CameraInfo (ROS 2 ``k`` or ROS 1 ``K``); None when it is missing or all zero."""
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K", None)  # ROS 1 CameraInfo
    if k is None:
        return None
    matrix = np.asarray(k, dtype=np.float64).reshape(3, 3)
    return None if not matrix.any() else matrix


def first_camera_info(
    reader: Any, topic: str | None, path: str | Path
) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """K and (width, height) of the first camera_info on `topic`; (None, None) without one."""
    if topic is None:
        return None, None
    connections = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in read_messages(reader, connections, path):
        msg = reader.deserialize(raw, conn.msgtype)
        return camera_intrinsics(msg), (int(msg.width), int(msg.height))
    return None, None
