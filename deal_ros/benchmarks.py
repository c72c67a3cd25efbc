"""Measurements shared by `deal-ros bench` and scripts/: each compares against a baseline in the same run.

Timings on shared machines are noisy; a ratio measured in one run (decode vs memcpy of the same
bytes) is what carries from one machine to another, so that is what the targets are stated in.

Decoding: a raw sensor_msgs/Image must cost no more than copying its bytes (target <= 2x memcpy):
rgb8, 16UC1 and 32FC1 decode to numpy views, so they should be far below. decode_depth_m converts
millimetres to float32 metres (a new array, 2x the bytes written), and bgr8 swaps channels: those
ratios are reported separately, they are conversions, not views. Messages are built two ways: as
rosbags deserialises them (data = numpy view of the CDR buffer) and rclpy-like (data = bytes;
rclpy itself gives array.array('B'), also measured).
"""

from __future__ import annotations

import array
import statistics
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from deal_ros.io.image_codec import decode_depth_m, decode_image, decode_rgb, image_fields

IMAGE = "sensor_msgs/msg/Image"
DECODE_TARGET = 2.0
"""Worst allowed decode / memcpy time ratio for the zero-copy (view) decoders."""


def median_seconds(fn: Callable[[], Any], repeat: int, budget_s: float = 0.02) -> float:
    """Median time of one call over `repeat` timeit repeats of about `budget_s` each."""
    timer = timeit.Timer(fn)
    single = min(timer.repeat(repeat=3, number=1))
    number = max(5, int(budget_s / max(single, 1e-7)))
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def rosbags_message(array_: np.ndarray, encoding: str) -> Any:
    """An Image as rosbags deserialises it from a bag (data: a numpy view of the CDR buffer)."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    fields = image_fields(array_, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8).copy()
    stamp = types["builtin_interfaces/msg/Time"](sec=1, nanosec=0)
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="c")
    msg = types["sensor_msgs/msg/Image"](header=header, **fields)
    raw = typestore.serialize_cdr(msg, "sensor_msgs/msg/Image")
    return typestore.deserialize_cdr(raw, "sensor_msgs/msg/Image")


def rclpy_like(array_: np.ndarray, encoding: str, container: str) -> Any:
    """An Image with the fields of an rclpy message; data as `bytes` or array.array('B')."""
    fields = image_fields(array_, encoding)
    raw = bytes(fields["data"])
    fields["data"] = raw if container == "bytes" else array.array("B", raw)
    return SimpleNamespace(**fields)


@dataclass
class DecodeRow:
    encoding: str
    source: str
    function: str
    decode_s: float
    memcpy_s: float

    @property
    def ratio(self) -> float:
        return self.decode_s / self.memcpy_s

    @property
    def is_view(self) -> bool:
        return "conversion" not in self.function


@dataclass
class DecodeReport:
    width: int
    height: int
    repeat: int
    rows: list[DecodeRow] = field(default_factory=list)

    @property
    def worst_view_ratio(self) -> float:
        return max((r.ratio for r in self.rows if r.is_view), default=0.0)

    @property
    def ok(self) -> bool:
        return self.worst_view_ratio <= DECODE_TARGET

    def format(self) -> str:
        lines = [f"{self.width}x{self.height}, median of {self.repeat} repeats; "
                 "memcpy = np.copyto of the message bytes",
                 f"{'encoding':<8} {'source':<14} {'function':<28} {'decode us':>10} {'memcpy us':>10} {'ratio':>7}"]
        lines += [f"{r.encoding:<8} {r.source:<14} {r.function:<28} {r.decode_s * 1e6:>10.1f} "
                  f"{r.memcpy_s * 1e6:>10.1f} {r.ratio:>7.3f}" for r in self.rows]
        verdict = "OK" if self.ok else "ABOVE TARGET"
        lines.append(f"worst view-decode ratio: {self.worst_view_ratio:.3f} "
                     f"(target <= {DECODE_TARGET:g}x memcpy): {verdict}")
        return "\n".join(lines)


DECODE_CASES: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("rgb8", "decode_image", decode_image),
    ("rgb8", "decode_rgb", decode_rgb),
    ("16UC1", "decode_image", decode_image),
    ("32FC1", "decode_image", decode_image),
    ("bgr8", "decode_rgb (conversion)", decode_rgb),
    ("16UC1", "decode_depth_m (conversion)", decode_depth_m),
    ("32FC1", "decode_depth_m (conversion)", decode_depth_m),
]


def bench_decode(width: int = 640, height: int = 480, repeat: int = 9,
                 on_row: Callable[[DecodeRow], None] | None = None) -> DecodeReport:
    """Time every decoder on rosbags and rclpy-like messages against a memcpy of the same bytes."""
    rng = np.random.default_rng(0)
    h, w = height, width
    images = {
        "rgb8": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "bgr8": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "16UC1": rng.integers(0, 10000, (h, w), dtype=np.uint16),
        "32FC1": rng.uniform(0.2, 8.0, (h, w)).astype(np.float32),
    }
    report = DecodeReport(width, height, repeat)
    for encoding, name, fn in DECODE_CASES:
        for source in ("rosbags", "rclpy bytes", "rclpy array"):
            if source == "rosbags":
                msg = rosbags_message(images[encoding], encoding)
            else:
                msg = rclpy_like(images[encoding], encoding, source.split()[1])
            src = np.frombuffer(msg.data, np.uint8)
            dst = np.empty_like(src)
            t_copy = median_seconds(lambda src=src, dst=dst: np.copyto(dst, src), repeat)
            t_decode = median_seconds(lambda fn=fn, msg=msg: fn(msg), repeat)
            row = DecodeRow(encoding, source, name, t_decode, t_copy)
            report.rows.append(row)
            if on_row is not None:
                on_row(row)
    return report


def write_scene_bag(path: str | Path, scenes: Sequence[Any], num_frames: int, fps: float = 15.0) -> Path:
    """A RealSense-like rosbag2 (mcap) of `num_frames` frames cycling through `scenes` (SyntheticFrame-like).

    Colour rgb8 on /camera/color/image_raw, aligned 16UC1 depth (mm, stamped 3 ms after colour),
    camera_info, and the scene's tags on /tags before each frame: what a robot records, at camera
    resolution, so that reading it costs what reading a real bag costs.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    path = Path(path)
    period_ns = int(1e9 / fps)
    base_ns = 1_700_000_000 * 10**9

    def header(stamp_ns: int) -> Any:
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera_color_optical_frame")

    def image(array_: np.ndarray, encoding: str, stamp_ns: int) -> bytes:
        fields = image_fields(array_, encoding)
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        return store.serialize_cdr(types[IMAGE](header=header(stamp_ns), **fields), IMAGE)

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        rgb_c = writer.add_connection("/camera/color/image_raw", IMAGE, typestore=store)
        depth_c = writer.add_connection("/camera/aligned_depth_to_color/image_raw", IMAGE, typestore=store)
        info_c = writer.add_connection("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        tags_c = writer.add_connection("/tags", "std_msgs/msg/String", typestore=store)
        for i in range(num_frames):
            scene = scenes[i % len(scenes)]
            stamp = base_ns + i * period_ns
            height, width = scene.rgb.shape[:2]
            tags = types["std_msgs/msg/String"](data=",".join(scene.tags))
            writer.write(tags_c, stamp - 1000, store.serialize_cdr(tags, "std_msgs/msg/String"))
            writer.write(rgb_c, stamp, image(scene.rgb, "rgb8", stamp))
            depth_mm = np.round(np.clip(scene.depth_m, 0, 65.0) * 1000.0).astype(np.uint16)
            writer.write(depth_c, stamp + 3_000_000, image(depth_mm, "16UC1", stamp + 3_000_000))
            k = np.asarray(scene.intrinsics, dtype=np.float64).reshape(-1)
            info = types["sensor_msgs/msg/CameraInfo"](
                header=header(stamp), height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
                k=k, r=np.eye(3).reshape(-1), p=np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0,
                roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False))
            writer.write(info_c, stamp + 1000, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
    return path
