"""Writing bags (rosbag2 sqlite3 / mcap, ROS 1 .bag) from numpy arrays and strings, times in nanoseconds.

The one place that turns arrays into sensor_msgs messages for rosbags (the layout comes from
image_codec.image_fields, depth units from image_codec.encode_depth): `deal-ros label`'s labelled
bag, the benchmarks' scene bag and the tests' synthetic bags all write through :class:`BagWriter`.
rosbags is imported when a writer or message set is made, not with this module.
"""

from __future__ import annotations

import contextlib
import functools
import typing
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from deal_ros.io.bag.topics import CAMERA_INFO, COMPRESSED, IMAGE, STRING
from deal_ros.io.image_codec import encode_depth, image_fields

__all__ = ["BagWriter", "RosMessages", "Storage"]

Storage = Literal["sqlite3", "mcap", "rosbag1"]


@functools.cache
def _typestore(ros1: bool) -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


class RosMessages:
    """std_msgs / sensor_msgs messages of one rosbags typestore (ROS 2 Humble, or ROS 1 Noetic) and their bytes."""

    def __init__(self, ros1: bool = False) -> None:
        self.ros1 = ros1
        self.typestore = _typestore(ros1)
        self._types = self.typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        stamp = self._types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        if self.ros1:
            return self._types["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id=frame_id)
        return self._types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
        """A sensor_msgs/Image holding `array` (its data a read-only view of the array's bytes)."""
        fields = image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
        return self._types[IMAGE](header=self.header(stamp_ns, frame_id), **fields)

    def compressed_image(self, data: bytes, fmt: str, stamp_ns: int, frame_id: str) -> Any:
        return self._types[COMPRESSED](header=self.header(stamp_ns, frame_id), format=fmt,
                                       data=np.frombuffer(data, dtype=np.uint8))

    def string(self, text: str) -> Any:
        return self._types[STRING](data=text)

    def camera_info(self, k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
        """A plumb_bob CameraInfo with intrinsics `k` (3x3), no distortion, P = [K | 0]."""
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        roi = self._types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False)
        matrices = {"d": np.zeros(5), "k": k.reshape(-1).copy(), "r": np.eye(3).reshape(-1),
                    "p": np.hstack([k, np.zeros((3, 1))]).reshape(-1)}
        if self.ros1:  # ROS 1 spells them D, K, R, P
            matrices = {name.upper(): value for name, value in matrices.items()}
        return self._types[CAMERA_INFO](header=self.header(stamp_ns, frame_id), height=height, width=width,
                                        distortion_model="plumb_bob", binning_x=0, binning_y=0, roi=roi,
                                        **matrices)

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        if self.ros1:
            return self.typestore.serialize_ros1(msg, msgtype)
        return self.typestore.serialize_cdr(msg, msgtype)


class BagWriter:
    """A bag being written: ``with BagWriter(path, storage="mcap") as bag: bag.write_image(...)``.

    Each write_* method takes the topic, the record time `log_ns` and, for stamped messages, the
    header stamp (`stamp_ns`, the record time when None) and frame id. A topic is added on its first
    message; add_topic declares one up front (a fixed order, or a topic without messages). Leaving
    the ``with`` block by an exception aborts the bag instead of finishing it.
    """

    def __init__(self, path: str | Path, storage: Storage = "mcap") -> None:
        if storage not in typing.get_args(Storage):
            raise ValueError(f"storage must be one of {typing.get_args(Storage)}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.messages = RosMessages(ros1=storage == "rosbag1")
        self._writer: Any = None
        self._topics: dict[str, Any] = {}

    def open(self) -> BagWriter:
        if self.storage == "rosbag1":
            from rosbags.rosbag1 import Writer as Writer1

            self._writer = Writer1(self.path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
            # metadata version 8: Humble's rosbag2 cannot parse 9's offered_qos_profiles list; Jazzy reads both
            self._writer = Writer(self.path, version=8, storage_plugin=plugin)
        self._writer.open()
        return self

    def close(self) -> None:
        """Finish the bag (index, metadata.yaml)."""
        self._writer.close()

    def abort(self) -> None:
        """Stop after an error without finishing the bag; the caller removes what was written."""
        with contextlib.suppress(Exception):  # already failing: keep the first error
            self._writer.abort()

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add_topic(self, topic: str, msgtype: str) -> Any:
        """Declare `topic` with the typestore's definition of `msgtype`; returns its connection."""
        known = self._topics.get(topic)
        if known is not None:
            if known.msgtype != msgtype:
                raise ValueError(f"topic {topic} was added as {known.msgtype}, not {msgtype}")
            return known
        connection = self._writer.add_connection(topic, msgtype, typestore=self.messages.typestore)
        self._topics[topic] = connection
        return connection

    def add_connection_like(self, connection: Any, typestore: Any) -> Any:
        """A rosbag2 connection with the topic, type, definition, hash and QoS of a reader's `connection`.

        The copy plays back like the original; write to it with write_raw.
        """
        msgdef = connection.msgdef.data if connection.msgdef is not None and connection.msgdef.data else None
        digest = connection.digest if msgdef and connection.digest else None
        return self._writer.add_connection(
            connection.topic, connection.msgtype, typestore=typestore, msgdef=msgdef, rihs01=digest,
            serialization_format=connection.ext.serialization_format,
            offered_qos_profiles=connection.ext.offered_qos_profiles)

    def write_raw(self, connection: Any, log_ns: int, raw: bytes | memoryview) -> None:
        """Serialised bytes on a connection of add_topic or add_connection_like."""
        self._writer.write(connection, log_ns, raw)

    def write(self, topic: str, log_ns: int, msg: Any, msgtype: str) -> None:
        """Any message of the typestore (see `messages`) on `topic`."""
        self._writer.write(self.add_topic(topic, msgtype), log_ns, self.messages.serialize(msg, msgtype))

    def write_image(self, topic: str, log_ns: int, array: np.ndarray, encoding: str, *,
                    stamp_ns: int | None = None, frame_id: str = "") -> None:
        """A sensor_msgs/Image of `array` in `encoding` (the array's dtype and shape must fit it)."""
        msg = self.messages.image(array, encoding, log_ns if stamp_ns is None else stamp_ns, frame_id)
        self.write(topic, log_ns, msg, IMAGE)

    def write_depth(self, topic: str, log_ns: int, depth_m: np.ndarray, encoding: str = "16UC1", *,
                    stamp_ns: int | None = None, frame_id: str = "") -> None:
        """A depth Image of (H, W) metres: 16UC1 / mono16 rounded millimetres or 32FC1 metres; holes 0."""
        self.write_image(topic, log_ns, encode_depth(depth_m, encoding), encoding, stamp_ns=stamp_ns,
                         frame_id=frame_id)

    def write_compressed_image(self, topic: str, log_ns: int, data: bytes, fmt: str, *,
                               stamp_ns: int | None = None, frame_id: str = "") -> None:
        """A sensor_msgs/CompressedImage (e.g. fmt 'rgb8; png compressed bgr8' or '16UC1; compressedDepth png')."""
        msg = self.messages.compressed_image(data, fmt, log_ns if stamp_ns is None else stamp_ns, frame_id)
        self.write(topic, log_ns, msg, COMPRESSED)

    def write_string(self, topic: str, log_ns: int, text: str) -> None:
        """A std_msgs/String (e.g. tags 'mug, box')."""
        self.write(topic, log_ns, self.messages.string(text), STRING)

    def write_camera_info(self, topic: str, log_ns: int, k: np.ndarray, width: int, height: int, *,
                          stamp_ns: int | None = None, frame_id: str = "") -> None:
        """A sensor_msgs/CameraInfo with 3x3 intrinsics `k` for a `width` x `height` image."""
        msg = self.messages.camera_info(k, width, height, log_ns if stamp_ns is None else stamp_ns, frame_id)
        self.write(topic, log_ns, msg, CAMERA_INFO)
