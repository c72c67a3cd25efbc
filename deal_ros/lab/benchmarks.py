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
import functools
import statistics
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from deal_ros.io.bag.topics import CAMERA_INFO, IMAGE, STRING
from deal_ros.io.image_codec import decode_depth_m, decode_image, decode_rgb, image_fields

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
    from deal_ros.io.bag.writer import RosMessages

    messages = RosMessages()
    raw = messages.serialize(messages.image(array_, encoding, stamp_ns=10**9, frame_id="c"), IMAGE)
    return messages.typestore.deserialize_cdr(raw, IMAGE)


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
    images: dict[str, np.ndarray] = {
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
            t_copy = median_seconds(functools.partial(np.copyto, dst, src), repeat)
            t_decode = median_seconds(functools.partial(fn, msg), repeat)
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
    from deal_ros.io.bag.writer import BagWriter

    path = Path(path)
    period_ns = int(1e9 / fps)
    base_ns = 1_700_000_000 * 10**9
    frame_id = "camera_color_optical_frame"
    rgb_topic, depth_topic = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw"
    info_topic, tags_topic = "/camera/color/camera_info", "/tags"
    with BagWriter(path, storage="mcap") as bag:
        for topic, msgtype in ((rgb_topic, IMAGE), (depth_topic, IMAGE), (info_topic, CAMERA_INFO),
                               (tags_topic, STRING)):
            bag.add_topic(topic, msgtype)
        for i in range(num_frames):
            scene = scenes[i % len(scenes)]
            stamp = base_ns + i * period_ns
            height, width = scene.rgb.shape[:2]
            bag.write_string(tags_topic, stamp - 1000, ",".join(scene.tags))
            bag.write_image(rgb_topic, stamp, scene.rgb, "rgb8", frame_id=frame_id)
            bag.write_depth(depth_topic, stamp + 3_000_000, scene.depth_m, "16UC1", frame_id=frame_id)
            bag.write_camera_info(info_topic, stamp + 1000, scene.intrinsics, width, height, stamp_ns=stamp,
                                  frame_id=frame_id)
    return path
