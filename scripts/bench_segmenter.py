"""Segmenter node overhead vs network forward time, without rclpy (`python scripts/bench_segmenter.py`).

Overhead = everything the segmenter node does per frame except the network's forward pass:
decode (rgb8 + 16UC1 messages -> numpy), pre-processing (resize to the network input, on the
model's device), post-processing (upsample, softmax, argmax, downloads), encoding (image_fields
of mask / confidence [/ overlay], the array.array copy rclpy's uint8[] setter takes, and the
semantic point cloud's structured array + byte copy create_cloud makes). Messages are plain
namespaces with rclpy's field types (data = array.array('B')). Same frames, same run; the ratio
overhead / forward is printed per output set. Target: < 10 % for the default outputs.
"""

from __future__ import annotations

import argparse
import array
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError, one_line
from deal_ros.inference.segmenter import Segmenter
from deal_ros.io.image_codec import decode_depth_m, decode_rgb
from deal_ros.lab.synthetic import make_tabletop_scenes
from deal_ros.online.outputs import output_image_fields, semantic_points


def to_msg(array_: np.ndarray, encoding: str, frame_id: str = "camera_color_optical_frame") -> SimpleNamespace:
    """A sensor_msgs/Image look-alike as rclpy delivers it (data: array.array('B'))."""
    height, width = array_.shape[:2]
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(array_).tobytes())
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id=frame_id),
                           height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=array_.strides[0], data=data)


def publish_copy(data: memoryview) -> array.array:
    out = array.array("B")
    out.frombytes(data)  # what ru.image_msg / create_cloud do: one memcpy into the message
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--input-height", type=int, default=240)
    parser.add_argument("--input-width", type=int, default=320)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = DealRosConfig(classes=["mug", "box", "ball"]).updated({
        "model.input_height": args.input_height, "model.input_width": args.input_width,
        "model.backbone": args.backbone, "train.device": args.device})
    seg = Segmenter(cfg)
    seg.model.eval()
    frames = make_tabletop_scenes(4, args.height, args.width, classes=cfg.classes, seed=3)
    msgs = [(to_msg(f.rgb, "rgb8"), to_msg(np.round(f.depth_m * 1000).astype(np.uint16), "16UC1"), f.intrinsics)
            for f in frames]
    device = seg.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, torch threads {torch.get_num_threads()}, camera {args.width}x{args.height}, "
          f"network input {args.input_width}x{args.input_height}, {args.backbone}")

    variants = {
        "mask+confidence (no subscribers to overlay/points)": dict(overlay=False, points=False),
        "mask+confidence+points": dict(overlay=False, points=True),
        "mask+confidence+points+overlay": dict(overlay=True, points=True),
    }
    times: dict[str, list[float]] = {k: [] for k in ("decode", "call", "forward", "encode_base", "points", "overlay")}
    for i in range(args.frames + 3):
        rgb_msg, depth_msg, k = msgs[i % len(msgs)]
        t0 = time.perf_counter()
        rgb = decode_rgb(rgb_msg, "rgb")
        depth_m = decode_depth_m(depth_msg, "depth")
        t1 = time.perf_counter()
        result = seg(rgb, depth_m, None)
        sync()
        t2 = time.perf_counter()
        t3 = t2 + result.timing_s["forward"]  # the forward, timed inside the same call
        for field in output_image_fields(result, rgb, with_overlay=False).values():
            publish_copy(field["data"])
        t4 = time.perf_counter()
        points = semantic_points(depth_m, result.mask, k, stride=2, skip_label=None)
        publish_copy(memoryview(points).cast("B"))
        t5 = time.perf_counter()
        publish_copy(output_image_fields(result, rgb, with_overlay=True)["overlay"]["data"])
        t6 = time.perf_counter()
        if i >= 3:  # warm-up
            stages = (t1 - t0, t2 - t1, t3 - t2, t4 - t2, t5 - t4, t6 - t5)
            for key, value in zip(times, stages, strict=True):
                times[key].append(value)

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    pre_post = med["call"] - med["forward"]
    print(f"median ms: decode {med['decode']:.2f} | segmenter call {med['call']:.2f} (forward {med['forward']:.2f},"
          f" pre+post {pre_post:.2f}) | encode mask+confidence {med['encode_base']:.2f} | points "
          f"{med['points']:.2f} | overlay {med['overlay']:.2f}")
    for name, opts in variants.items():
        overhead = med["decode"] + pre_post + med["encode_base"]
        overhead += med["points"] if opts["points"] else 0.0
        overhead += med["overlay"] if opts["overlay"] else 0.0
        print(f"{name}: overhead {overhead:.2f} ms vs forward {med['forward']:.2f} ms -> ratio "
              f"{overhead / med['forward']:.1%}")


if __name__ == "__main__":
    try:
        main()
    except DealRosError as exc:  # a bad option (device, backbone, size): one line, as the CLI prints it
        sys.exit(f"bench_segmenter: {one_line(exc)}")
