#!/usr/bin/env python3
"""Benchmark: image decoding vs a plain memcpy of the same bytes, in the same run.

Decoding a raw sensor_msgs/Image must cost no more than copying its bytes (target <= 2x memcpy):
rgb8, 16UC1 and 32FC1 decode to numpy views, so they should be far below. decode_depth_m converts
millimetres to float32 metres (a new array, 2x the bytes written), and bgr8 swaps channels: those
ratios are reported separately, they are conversions, not views.

Messages are built two ways: as rosbags deserialises them (data = numpy view of the CDR buffer)
and rclpy-like (data = bytes; rclpy itself gives array.array('B'), also measured).

    python scripts/bench_decode.py [--width 640 --height 480 --repeat 9]
"""

from __future__ import annotations

import argparse
import array
import statistics
import timeit
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from deal_ros.io.image_codec import decode_depth_m, decode_image, decode_rgb, image_fields


def median_seconds(fn: Callable[[], Any], repeat: int, budget_s: float = 0.02) -> float:
    """Median time of one call over `repeat` timeit repeats of about `budget_s` each."""
    timer = timeit.Timer(fn)
    single = min(timer.repeat(repeat=3, number=1))
    number = max(5, int(budget_s / max(single, 1e-7)))
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def rosbags_message(array_: np.ndarray, encoding: str) -> Any:
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
    fields = image_fields(array_, encoding)
    raw = bytes(fields["data"])
    fields["data"] = raw if container == "bytes" else array.array("B", raw)
    return SimpleNamespace(**fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    h, w = args.height, args.width
    images = {
        "rgb8": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "bgr8": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "16UC1": rng.integers(0, 10000, (h, w), dtype=np.uint16),
        "32FC1": rng.uniform(0.2, 8.0, (h, w)).astype(np.float32),
    }
    cases: list[tuple[str, str, Callable[[Any], Any]]] = [
        ("rgb8", "decode_image", decode_image),
        ("rgb8", "decode_rgb", decode_rgb),
        ("16UC1", "decode_image", decode_image),
        ("32FC1", "decode_image", decode_image),
        ("bgr8", "decode_rgb (conversion)", decode_rgb),
        ("16UC1", "decode_depth_m (conversion)", decode_depth_m),
        ("32FC1", "decode_depth_m (conversion)", decode_depth_m),
    ]
    print(f"{w}x{h}, median of {args.repeat} repeats; memcpy = np.copyto of the message bytes")
    print(f"{'encoding':<8} {'source':<14} {'function':<28} {'decode us':>10} {'memcpy us':>10} {'ratio':>7}")
    worst_view = 0.0
    for encoding, name, fn in cases:
        for source in ("rosbags", "rclpy bytes", "rclpy array"):
            if source == "rosbags":
                msg = rosbags_message(images[encoding], encoding)
            else:
                msg = rclpy_like(images[encoding], encoding, source.split()[1])
            src = np.frombuffer(msg.data, np.uint8)
            dst = np.empty_like(src)
            t_copy = median_seconds(lambda src=src, dst=dst: np.copyto(dst, src), args.repeat)
            t_decode = median_seconds(lambda fn=fn, msg=msg: fn(msg), args.repeat)
            ratio = t_decode / t_copy
            if "conversion" not in name:
                worst_view = max(worst_view, ratio)
            print(
                f"{encoding:<8} {source:<14} {name:<28} {t_decode * 1e6:>10.1f} {t_copy * 1e6:>10.1f} "
                f"{ratio:>7.3f}"
            )
    verdict = "OK" if worst_view <= 2.0 else "ABOVE TARGET"
    print(f"worst view-decode ratio: {worst_view:.3f} (target <= 2x memcpy): {verdict}")
    return 0 if worst_view <= 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
