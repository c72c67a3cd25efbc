"""Synthetic RGB-D rosbags for tests, written with the package's BagWriter over rosbags (no mocks).

Reuse from another test directory::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from bagfactory import write_rgbd_bag

The bag looks like a RealSense recording: colour and aligned depth at ~10 Hz, depth stamps
jittered by a few ms against colour, receive (bag) times a few ms after the stamps, camera_info
with every colour frame and an optional std_msgs/String tags topic.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path

import cv2
import numpy as np

from deal_ros.io.bag.writer import BagWriter
from deal_ros.io.image_codec import encode_depth

BASE_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz
RGB_LATENCY_NS = 3_000_000
DEPTH_LATENCY_NS = 9_000_000
K = np.array([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])
FRAME_ID = "camera_color_optical_frame"

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


def compressed_depth_payload(depth_mm: np.ndarray) -> bytes:
    """compressed_depth_image_transport layout for 16UC1: 12-byte ConfigHeader + PNG."""
    ok, png = cv2.imencode(".png", depth_mm)
    assert ok
    return struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()


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
    records: list[tuple[int, Callable[[BagWriter], None]]] = []  # (log_ns, writes it), written in log_ns order

    def record(method: str, topic: str, log_ns: int, *args: object, **stamp: object) -> None:
        records.append((log_ns, methodcaller(method, topic, log_ns, *args, **stamp)))

    for t_s, text in tags_sequence:
        if tags_topic is not None:
            record("write_string", tags_topic, BASE_NS + int(t_s * 1e9), text)
    for i in range(num_frames):
        rgb, depth_m = frames[i] if frames is not None else synthetic_frame(rng, size)
        height, width = rgb.shape[:2]
        stamp = BASE_NS + i * PERIOD_NS + int(rng.integers(-1_000_000, 1_000_000))
        jitter = int(rng.uniform(2.0, max(jitter_ms, 2.0)) * 1e6) * (1 if rng.random() < 0.5 else -1)
        depth_stamp = stamp + jitter
        rgb_log = stamp + RGB_LATENCY_NS
        stamped = {"stamp_ns": stamp, "frame_id": FRAME_ID}
        if rgb_encoding in ("jpeg", "png"):
            ok, buf = cv2.imencode("." + ("jpg" if rgb_encoding == "jpeg" else "png"), rgb[..., ::-1])
            assert ok
            fmt = f"rgb8; {rgb_encoding} compressed bgr8"
            record("write_compressed_image", rgb_topic, rgb_log, buf.tobytes(), fmt, **stamped)
        else:
            record("write_image", rgb_topic, rgb_log, _colour_payload(rgb, rgb_encoding), rgb_encoding, **stamped)
        depth_out = depth_m
        if depth_size is not None:
            depth_out = cv2.resize(depth_m, (depth_size[1], depth_size[0]), interpolation=cv2.INTER_NEAREST)
        depth_mm = encode_depth(depth_out, "16UC1")
        depth_log = depth_stamp + DEPTH_LATENCY_NS
        depth_stamped = {"stamp_ns": depth_stamp, "frame_id": FRAME_ID}
        if depth_encoding == "16UC1":
            record("write_image", depth_topic, depth_log, depth_mm, "16UC1", **depth_stamped)
        elif depth_encoding == "32FC1":
            record("write_image", depth_topic, depth_log, depth_out.astype(np.float32), "32FC1", **depth_stamped)
        elif depth_encoding == "compressedDepth":
            payload = compressed_depth_payload(depth_mm)
            record("write_compressed_image", depth_topic, depth_log, payload, "16UC1; compressedDepth png",
                   **depth_stamped)
        else:
            raise ValueError(depth_encoding)
        if info_topic is not None:
            record("write_camera_info", info_topic, rgb_log + 1000, K, width, height, **stamped)
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
    with BagWriter(path, storage) as bag:
        for _, write in records:
            write(bag)
    written.start_ns = records[0][0] if records else BASE_NS
    return written


def _colour_payload(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB as the array of a raw colour encoding."""
    height, width = rgb.shape[:2]
    opaque = np.full((height, width), 255, np.uint8)
    return {
        "rgb8": lambda: rgb,
        "bgr8": lambda: rgb[..., ::-1],
        "rgba8": lambda: np.dstack([rgb, opaque]),
        "bgra8": lambda: np.dstack([rgb[..., ::-1], opaque]),
        "mono8": lambda: rgb[..., 0],
    }[encoding]()


def write_empty_bag(path: str | Path, storage: str = "sqlite3") -> Path:
    """A bag with one connection and no messages."""
    path = Path(path)
    with BagWriter(path, storage) as bag:
        bag.add_topic(RS_RGB, "sensor_msgs/msg/Image")
    return path


def write_ros1_rgbd_bag(
    path: str | Path, num_frames: int = 5, size: tuple[int, int] = (12, 16)
) -> WrittenBag:
    """A ROS 1 .bag (RealSense names, rgb8 + 16UC1, camera_info with upper-case K, /tags 'mug')."""
    path = Path(path)
    rng = np.random.default_rng(0)
    written = WrittenBag(path, start_ns=BASE_NS)
    with BagWriter(path, "rosbag1") as bag:
        for topic, msgtype in ((RS_RGB, "sensor_msgs/msg/Image"), (RS_DEPTH, "sensor_msgs/msg/Image"),
                               (RS_INFO, "sensor_msgs/msg/CameraInfo"), ("/tags", "std_msgs/msg/String")):
            bag.add_topic(topic, msgtype)
        bag.write_string("/tags", BASE_NS, "mug")
        for i in range(num_frames):
            stamp = BASE_NS + RGB_LATENCY_NS + i * PERIOD_NS
            rgb, depth_m = synthetic_frame(rng, size)
            depth_mm = encode_depth(depth_m, "16UC1")
            bag.write_image(RS_RGB, stamp, rgb, "rgb8", stamp_ns=stamp, frame_id=FRAME_ID)
            bag.write_image(RS_DEPTH, stamp + 4_000_000, depth_mm, "16UC1", frame_id=FRAME_ID)
            bag.write_camera_info(RS_INFO, stamp + 1000, K, size[1], size[0], stamp_ns=stamp, frame_id=FRAME_ID)
            written.rgb_stamps_ns.append(stamp)
            written.rgb.append(rgb)
            written.depth_m.append(depth_mm.astype(np.float32) / 1000.0)
            written.tags.append(["mug"])
    return written
