"""Synthetic RGB-D rosbags for tests, written with rosbags' own Writer (no mocks).

Reuse from another test directory::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from bagfactory import write_rgbd_bag

The bag looks like a RealSense recording: colour and aligned depth at ~10 Hz, depth stamps
jittered by a few ms against colour, receive (bag) times a few ms after the stamps, camera_info
with every colour frame and an optional std_msgs/String tags topic.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from deal_ros.io.image_codec import image_fields

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
BASE_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz
RGB_LATENCY_NS = 3_000_000
DEPTH_LATENCY_NS = 9_000_000
K = np.array([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])

RS_RGB = "/camera/color/image_raw"
RS_DEPTH = "/camera/aligned_depth_to_color/image_raw"
RS_INFO = "/camera/color/camera_info"


@dataclass
class WrittenBag:
    """What was written, for assertions."""

    path: Path
    rgb_stamps_ns: list[int] = field(default_factory=list)
    depth_stamps_ns: list[int] = field(default_factory=list)
    rgb_log_ns: list[int] = field(default_factory=list)
    tags: list[list[str] | None] = field(default_factory=list)
    """Tags that apply to each colour frame (latest tags message received before it), None = none yet."""
    rgb: list[np.ndarray] = field(default_factory=list)
    depth_m: list[np.ndarray] = field(default_factory=list)
    start_ns: int = 0


def _header(stamp_ns: int, frame_id: str) -> object:
    types = TYPESTORE.types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_msg(
    array: np.ndarray, encoding: str, stamp_ns: int = BASE_NS, frame_id: str = "camera_color_optical_frame"
):
    """A rosbags sensor_msgs/Image holding `array` (via image_fields)."""
    fields = image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8).copy()
    return TYPESTORE.types["sensor_msgs/msg/Image"](header=_header(stamp_ns, frame_id), **fields)


def compressed_msg(
    data: bytes, fmt: str, stamp_ns: int = BASE_NS, frame_id: str = "camera_color_optical_frame"
):
    return TYPESTORE.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, frame_id), format=fmt, data=np.frombuffer(data, dtype=np.uint8).copy()
    )


def compressed_depth_payload(depth_mm: np.ndarray) -> bytes:
    """compressed_depth_image_transport layout for 16UC1: 12-byte ConfigHeader + PNG."""
    ok, png = cv2.imencode(".png", depth_mm)
    assert ok
    return struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()


def _camera_info(stamp_ns: int, width: int, height: int):
    types = TYPESTORE.types
    return types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, "camera_color_optical_frame"),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def synthetic_frame(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Random RGB and a depth plane with a nearer box: (H, W, 3) uint8, (H, W) float32 metres, holes 0."""
    height, width = size
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.full((height, width), 1.5, np.float32)
    y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
    depth[y : y + height // 3, x : x + width // 3] = 0.8
    depth[rng.random((height, width)) < 0.02] = 0.0
    return rgb, depth


def write_rgbd_bag(
    path: str | Path,
    storage: str = "sqlite3",
    num_frames: int = 20,
    size: tuple[int, int] = (120, 160),
    rgb_topic: str = RS_RGB,
    depth_topic: str = RS_DEPTH,
    info_topic: str | None = RS_INFO,
    tags_topic: str | None = "/tags",
    tags_sequence: Sequence[tuple[float, str]] = ((0.0, "mug,box"),),
    jitter_ms: float = 5.0,
    depth_encoding: str = "16UC1",
    rgb_encoding: str = "rgb8",
    frames: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    depth_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> WrittenBag:
    """Write a synthetic RGB-D bag; returns what was written.

    storage: 'sqlite3' or 'mcap'. size: (H, W). tags_sequence: (seconds after the first frame,
    'comma,separated') published on tags_topic. jitter_ms: depth stamp = colour stamp +- 2..jitter
    ms (random sign). rgb_encoding: rgb8, bgr8, rgba8, bgra8, mono8, or 'jpeg' / 'png'
    (CompressedImage on rgb_topic). depth_encoding: 16UC1 (mm), 32FC1 (m) or 'compressedDepth'
    (16UC1 PNG). frames: (rgb, depth_m) pairs to write instead of random content. depth_size:
    write depth at this (H, W) (nearest resize) to simulate unaligned depth.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    if frames is not None:
        num_frames = len(frames)
    written = WrittenBag(path, start_ns=BASE_NS)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    rgb_type = (
        "sensor_msgs/msg/CompressedImage" if rgb_encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"
    )
    depth_type = (
        "sensor_msgs/msg/CompressedImage" if depth_encoding == "compressedDepth" else "sensor_msgs/msg/Image"
    )
    records: list[tuple[int, str, object, str]] = []  # (log_ns, topic, msg, msgtype)

    for t_s, text in tags_sequence:
        if tags_topic is not None:
            msg = TYPESTORE.types["std_msgs/msg/String"](data=text)
            records.append((BASE_NS + int(t_s * 1e9), tags_topic, msg, "std_msgs/msg/String"))
    for i in range(num_frames):
        rgb, depth_m = frames[i] if frames is not None else synthetic_frame(rng, size)
        height, width = rgb.shape[:2]
        stamp = BASE_NS + i * PERIOD_NS + int(rng.integers(-1_000_000, 1_000_000))
        jitter = int(rng.uniform(2.0, max(jitter_ms, 2.0)) * 1e6) * (1 if rng.random() < 0.5 else -1)
        depth_stamp = stamp + jitter
        if rgb_encoding in ("jpeg", "png"):
            ok, buf = cv2.imencode("." + ("jpg" if rgb_encoding == "jpeg" else "png"), rgb[..., ::-1])
            assert ok
            rgb_msg = compressed_msg(buf.tobytes(), f"rgb8; {rgb_encoding} compressed bgr8", stamp)
        else:
            payload = {
                "rgb8": rgb,
                "bgr8": rgb[..., ::-1],
                "rgba8": np.dstack([rgb, np.full((height, width), 255, np.uint8)]),
                "bgra8": np.dstack([rgb[..., ::-1], np.full((height, width), 255, np.uint8)]),
                "mono8": rgb[..., 0],
            }[rgb_encoding]
            rgb_msg = image_msg(payload, rgb_encoding, stamp)
        depth_out = depth_m
        if depth_size is not None:
            depth_out = cv2.resize(depth_m, (depth_size[1], depth_size[0]), interpolation=cv2.INTER_NEAREST)
        depth_mm = np.round(depth_out * 1000.0).astype(np.uint16)
        if depth_encoding == "16UC1":
            depth_msg = image_msg(depth_mm, "16UC1", depth_stamp)
        elif depth_encoding == "32FC1":
            depth_msg = image_msg(depth_out.astype(np.float32), "32FC1", depth_stamp)
        elif depth_encoding == "compressedDepth":
            depth_msg = compressed_msg(
                compressed_depth_payload(depth_mm), "16UC1; compressedDepth png", depth_stamp
            )
        else:
            raise ValueError(depth_encoding)
        rgb_log = stamp + RGB_LATENCY_NS
        records.append((rgb_log, rgb_topic, rgb_msg, rgb_type))
        records.append((depth_stamp + DEPTH_LATENCY_NS, depth_topic, depth_msg, depth_type))
        if info_topic is not None:
            records.append(
                (rgb_log + 1000, info_topic, _camera_info(stamp, width, height), "sensor_msgs/msg/CameraInfo")
            )
        written.rgb_stamps_ns.append(stamp)
        written.depth_stamps_ns.append(depth_stamp)
        written.rgb_log_ns.append(rgb_log)
        written.rgb.append(rgb)
        written.depth_m.append(
            depth_mm.astype(np.float32) / 1000.0 if depth_encoding != "32FC1" else depth_out
        )
        current = None
        for t_s, text in tags_sequence:
            if tags_topic is not None and BASE_NS + int(t_s * 1e9) <= rgb_log:
                current = [t.strip() for t in text.split(",") if t.strip()]
        written.tags.append(current)

    records.sort(key=lambda r: r[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for _, topic, _, msgtype in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for log_ns, topic, msg, msgtype in records:
            writer.write(connections[topic], log_ns, TYPESTORE.serialize_cdr(msg, msgtype))
    written.start_ns = records[0][0] if records else BASE_NS
    return written


def write_empty_bag(path: str | Path, storage: str = "sqlite3") -> Path:
    """A bag with one connection and no messages."""
    path = Path(path)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        writer.add_connection(RS_RGB, "sensor_msgs/msg/Image", typestore=TYPESTORE)
    return path


def write_ros1_rgbd_bag(
    path: str | Path, num_frames: int = 5, size: tuple[int, int] = (12, 16)
) -> WrittenBag:
    """A ROS 1 .bag (RealSense names, rgb8 + 16UC1, camera_info with upper-case K, /tags 'mug')."""
    from rosbags.rosbag1 import Writer as Writer1

    path = Path(path)
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    rng = np.random.default_rng(0)
    written = WrittenBag(path, start_ns=BASE_NS)

    def header(stamp_ns: int) -> object:
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return types["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id="camera_color_optical_frame")

    def image(array: np.ndarray, encoding: str, stamp_ns: int) -> bytes:
        fields = image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8).copy()
        msg = types["sensor_msgs/msg/Image"](header=header(stamp_ns), **fields)
        return store.serialize_ros1(msg, "sensor_msgs/msg/Image")

    with Writer1(path) as writer:
        c_rgb = writer.add_connection(RS_RGB, "sensor_msgs/msg/Image", typestore=store)
        c_depth = writer.add_connection(RS_DEPTH, "sensor_msgs/msg/Image", typestore=store)
        c_info = writer.add_connection(RS_INFO, "sensor_msgs/msg/CameraInfo", typestore=store)
        c_tags = writer.add_connection("/tags", "std_msgs/msg/String", typestore=store)
        tags_msg = types["std_msgs/msg/String"](data="mug")
        writer.write(c_tags, BASE_NS, store.serialize_ros1(tags_msg, "std_msgs/msg/String"))
        for i in range(num_frames):
            stamp = BASE_NS + RGB_LATENCY_NS + i * PERIOD_NS
            rgb, depth_m = synthetic_frame(rng, size)
            depth_mm = np.round(depth_m * 1000.0).astype(np.uint16)
            writer.write(c_rgb, stamp, image(rgb, "rgb8", stamp))
            writer.write(c_depth, stamp + 4_000_000, image(depth_mm, "16UC1", stamp + 4_000_000))
            roi = types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            )
            info = types["sensor_msgs/msg/CameraInfo"](
                header=header(stamp),
                height=size[0],
                width=size[1],
                distortion_model="plumb_bob",
                D=np.zeros(5),
                K=K.reshape(-1).copy(),
                R=np.eye(3).reshape(-1),
                P=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0,
                binning_y=0,
                roi=roi,
            )
            writer.write(c_info, stamp + 1000, store.serialize_ros1(info, "sensor_msgs/msg/CameraInfo"))
            written.rgb_stamps_ns.append(stamp)
            written.rgb.append(rgb)
            written.depth_m.append(depth_mm.astype(np.float32) / 1000.0)
            written.tags.append(["mug"])
    return written
