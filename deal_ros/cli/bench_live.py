"""`deal-ros bench live [BAG --gt DIR]`: how good the live masks are, and how soon, while the robot looks.

Plays a stream in real time (or at --rate R, as `ros2 bag play --rate`) through the onboard process as the nodes
wire it (deal_ros.online.live_rig: keyframe gate and buffer in the pair callback, the training loop in its worker
thread with the rate cap and the weight hand-off, the segmenter's own copy of the network on the newest pair,
the CPU share between them, the warm-up rule), with the nodes' defaults (the config's keyframe.*, sync.* and
train.*, and the node parameters: --set mask.min_model_step=50 and the like set them). Every mask the segmenter
makes is recorded with the frame it came from and the wall time it was ready, and scored against ground truth
over time: wall-clock seconds since the stream started (the robot's time, whatever the rate), mIoU of the masks
published in each --window (10 s) window, the time until the window mIoU first reaches 0.5, 0.6 and 0.7,
masks/s, training steps/s, keyframes taken. Masks withheld while warming up (mask.while_warming_up 'withhold',
the default, until mask.min_model_step) are scored apart ("all masks"), so a run says what publishing them would
give.

Without BAG, a built-in close-up stream (deal_ros.lab.synthetic.stream): --seconds of a camera at --camera-hz
orbiting one or two objects, a new object set and new tags every 30-60 s, ground truth for every frame; it is
rendered before it plays. With BAG, its frames are read as `deal-ros train` reads them (topics, tags, sync.*)
and --gt holds their masks (<frame index:06d>.png or <colour stamp ns>.png).

Prints one line per window and the totals; --json FILE writes them all, --plot FILE (default: beside --json)
the window mIoU and the loss against time. Issue 19's targets (built-in stream, 10 Hz, the CPU defaults): window
mIoU >= 0.6 within 120 s and >= 0.7 within 300 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.cli import UserError, add_set_argument
from deal_ros.cli.frames import add_tag_options, add_topic_options, default_classes, read_frames, tag_source
from deal_ros.config.loading import parse_overrides
from deal_ros.storage.files import atomic_write_text, check_output_dir

BUILTIN_SECONDS = 300.0
"""Default length of the built-in stream (s)."""
TARGETS = {"0.6": 120.0, "0.7": 300.0}
"""Issue 19: window mIoU level -> seconds of stream by which it must be reached (built-in stream, 10 Hz)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("live", help="mask quality over time while training live (onboard wiring)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", nargs="?", metavar="BAG", help="rosbag to play (default: the built-in close-up stream)")
    parser.add_argument("--gt", metavar="DIR", help="ground-truth masks of BAG's frames (<index:06d>.png or "
                                                    "<stamp_ns>.png)")
    add_tag_options(parser)
    parser.add_argument("--config", help="YAML config (plain or ROS 2 parameter file)")
    parser.add_argument("--classes", metavar="'A,B'",
                        help="foreground class names (default: from --config, else the tags given; built-in: "
                             "the config's classes)")
    add_topic_options(parser, "use --set sync.slop=S (the nodes' key)")
    add_set_argument(parser, "config override or node parameter, e.g. --set model.input_height=128 "
                             "--set mask.min_model_step=50")
    parser.add_argument("--rate", type=float, default=1.0, help="play speed (default: %(default)s = real time)")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help=f"play the first S seconds of stream (default: the whole bag; the built-in stream: "
                             f"{BUILTIN_SECONDS:g})")
    parser.add_argument("--camera-hz", type=float, default=10.0, help="built-in stream: frame rate (default: "
                                                                      "%(default)s)")
    parser.add_argument("--camera-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                        help="built-in stream: image size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="built-in stream: its seed (default: %(default)s)")
    parser.add_argument("--window", type=float, default=10.0, help="window length in seconds (default: %(default)s)")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="write everything as JSON")
    parser.add_argument("--plot", metavar="FILE", help="PNG of window mIoU and loss over time (default: --json's "
                                                       "name with .png)")
    parser.set_defaults(func=run)


@dataclass
class _Source:
    """What to play: frames in time order, the ground truth of frame i (None: none), and how to describe it."""

    frames: Any
    gt: Callable[[int], np.ndarray | None]
    description: str


def _check_args(args: argparse.Namespace) -> Path | None:
    if not args.rate > 0 or not args.window > 0 or (args.seconds is not None and not args.seconds > 0):
        raise UserError("--rate, --window and --seconds must be > 0")
    if args.bag is None:
        if args.gt is not None:
            raise UserError("--gt goes with BAG; the built-in stream brings its own ground truth")
        if args.tags is not None or args.tags_topic is not None or args.tags_yaml is not None:
            raise UserError("the built-in stream has its own tags; --tags, --tags-topic and --tags-yaml go with BAG")
        if not args.camera_hz > 0:
            raise UserError("--camera-hz must be > 0")
        if min(args.camera_size) < 16:
            raise UserError("--camera-size must be at least 16 16")
    elif args.gt is None:
        raise UserError(f"{args.bag}: give its ground-truth masks with --gt DIR")
    plot = args.plot or (str(Path(args.json_out).with_suffix(".png")) if args.json_out else None)
    for option, name in (("--json", args.json_out), ("--plot", plot)):
        if name:
            if Path(name).is_dir():
                raise UserError(f"{option} {name} is a folder; give a file name")
            check_output_dir(Path(name).parent, f"{option} folder")
    return Path(plot) if plot else None


def _config(args: argparse.Namespace, tags: Any, overrides: dict[str, Any]) -> Any:
    from deal_ros.config import DealRosConfig
    from deal_ros.frames.tags import parse_tags
    from deal_ros.online.parameters import load_parameter_file

    if args.classes is not None:
        overrides["classes"] = parse_tags(args.classes)
    if args.config is not None:
        return load_parameter_file(args.config, overrides)
    if "classes" not in overrides and args.bag is not None:
        args.bags = [args.bag]
        overrides["classes"] = default_classes(args, tags)
    return DealRosConfig().updated(overrides)


def _builtin(args: argparse.Namespace, cfg: Any) -> _Source:
    from deal_ros.lab.synthetic.stream import CloseupStream

    height, width = args.camera_size
    started = time.monotonic()
    seconds = BUILTIN_SECONDS if args.seconds is None else args.seconds
    stream = CloseupStream(seconds, args.camera_hz, height, width, cfg.classes, args.seed)
    print(f"built-in close-up stream: {seconds:g} s at {args.camera_hz:g} Hz, {width}x{height}, "
          f"{len(stream.segments)} object sets ({'; '.join(','.join(s.tags) for s in stream.segments)}), "
          f"rendered in {time.monotonic() - started:.0f} s")
    return _Source(stream.frames(), stream.gt, f"built-in close-up stream, seed {args.seed}")


def _bag(args: argparse.Namespace, cfg: Any, tags: Any) -> _Source:
    """The bag's frames (read in the background) and its --gt masks, all checked before anything plays."""
    from deal_ros.frames.checks import check_same_size
    from deal_ros.frames.tags import UnknownTagError
    from deal_ros.io.bag import ReadStats, prefetch, scan_tag_names
    from deal_ros.io.ground_truth import match_gt_folder, read_gt_mask

    if tags is None:  # from the bag's tags topic: a name the node would refuse is refused here
        _, names = scan_tag_names(args.bag, args.tags_topic)
        unknown = [name for name in names if name not in cfg.classes]
        if unknown:
            raise UnknownTagError(unknown, cfg.classes)
    keys, sizes = [], {}
    for frame in read_frames(args.bag, args, cfg, tags, ReadStats(), require_tags=False):
        keys.append((frame.index, frame.stamp_ns))
        sizes[frame.index] = frame.rgb.shape[:2]
    if not keys:
        raise UserError(f"{args.bag}: no RGB-D frame could be read")
    paths = match_gt_folder(args.gt, keys, args.bag)
    for index, path in paths.items():
        gt = read_gt_mask(path)
        check_same_size(str(path), "ground truth", gt, f"frame {index} of {args.bag}", np.zeros(sizes[index]))
        if int(gt[gt != 255].max(initial=0)) > len(cfg.classes):
            raise UserError(f"{path} holds class id {int(gt[gt != 255].max())} but only {len(cfg.classes)} "
                            f"classes are known ({', '.join(cfg.classes)})")

    def gt_of(index: int) -> np.ndarray | None:
        path = paths.get(index)
        return None if path is None else read_gt_mask(path)

    frames: Iterable[Any] = prefetch(read_frames(args.bag, args, cfg, tags, ReadStats(), require_tags=False))
    if args.seconds is not None:
        end_ns = keys[0][1] + round(args.seconds * 1e9)
        frames = itertools.takewhile(lambda frame: frame.stamp_ns < end_ns, frames)
    return _Source(frames, gt_of, f"{args.bag} ({len(paths)} of {len(keys)} frames with ground truth)")


def run(args: argparse.Namespace) -> int:
    from deal_ros.online.live_rig import is_node_parameter, node_values

    plot = _check_args(args)
    overrides = parse_overrides(args.overrides)
    node = {key: overrides.pop(key) for key in list(overrides) if is_node_parameter(key)}
    node_values(node)  # a bad value is refused now, not after the stream is rendered
    tags = tag_source(args) if args.bag is not None else None
    cfg = _config(args, tags, overrides)
    source = _builtin(args, cfg) if args.bag is None else _bag(args, cfg, tags)
    report = measure(cfg, node, source, args.rate, args.window)
    print(format_report(report))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report, indent=1))
    if plot is not None:
        from deal_ros.lab.plots import plot_live

        plot_live(report["windows"], plot, f"{source.description}, rate {args.rate:g}",
                  [change["wall_s"] for change in report["tag_changes"]])
        print(f"plot: {plot}")
    return 0


def measure(cfg: Any, node: dict[str, Any], source: _Source, rate: float, window_s: float) -> dict[str, Any]:
    """Play `source` through a LiveRig, record masks and steps by wall time, score them; the report as a dict."""
    import torch

    from deal_ros.labels.timeline import TimelineScorer, seconds_to_miou
    from deal_ros.online.live_rig import LiveMask, LiveRig, play

    masks: list[tuple[float, LiveMask]] = []
    steps: list[tuple[float, int, float]] = []
    clock = {"start": 0.0}
    tag_changes: list[dict[str, Any]] = []

    def on_offer(frame: Any, offered_s: float) -> None:
        if not clock["start"]:
            clock["start"] = offered_s
        tags = list(frame.tags) if frame.tags_known else None
        if not tag_changes or tags != tag_changes[-1]["tags"]:
            tag_changes.append({"wall_s": offered_s - clock["start"], "tags": tags})

    load_start = os.getloadavg()[0]
    rig = LiveRig(cfg, node, on_mask=lambda m: masks.append((m.done_s - clock["start"], m)),
                  on_step=lambda s: steps.append((time.monotonic() - clock["start"], s.step, s.loss)))
    net = rig.trainer.cfg.model  # the size the network runs at (auto resolved for the device)
    print(f"device {rig.trainer.device}, torch threads {torch.get_num_threads()}, network "
          f"{net.input_width}x{net.input_height}, batch {cfg.train.batch_size}, rate {rate:g}; "
          f"load average {load_start:.1f} on {os.cpu_count()} CPUs (other processes share them)")
    rig.start()
    try:
        played = play(rig, source.frames, rate, on_offer=on_offer)
        rig.drain()  # the last pair of the stream is segmented and scored
        ended_s = time.monotonic()
    finally:
        rig.stop()
    duration = max(played.end_s, ended_s) - clock["start"]
    scorer = TimelineScorer(cfg.num_classes + 1, window_s, ["background", *cfg.classes])
    for wall_s, mask in masks:
        scorer.add_mask(wall_s, mask.mask, source.gt(mask.frame.index), mask.published)
    for wall_s, _, loss in steps:
        scorer.add_step(wall_s, loss)
    windows = scorer.windows(duration)
    published = sum(m.published for _, m in masks)
    latencies = [m.done_s - m.offered_s for _, m in masks]
    return {
        "source": source.description, "rate": rate, "frames": played.frames, "duration_s": duration,
        "stream_s": (played.end_s - clock["start"]) * rate, "window_s": window_s,
        "seconds_to_miou": seconds_to_miou(windows),
        "seconds_to_miou_all_masks": seconds_to_miou(windows, all_masks=True),
        "windows": [asdict(w) for w in windows], "tag_changes": tag_changes,
        "masks": published, "masks_per_s": published / duration, "masks_computed": len(masks),
        "masks_computed_per_s": len(masks) / duration, "masks_withheld": rig.masks_withheld,
        "latency_median_s": float(np.median(latencies)) if latencies else None,
        "inference_median_s": float(np.median([m.inference_s for _, m in masks])) if masks else None,
        "steps": len(steps), "steps_per_s": len(steps) / duration, "final_model_step": rig.trainer.step,
        "keyframes": rig.intake.buffered, "keyframes_gated": rig.gate.accepted, "frames_dropped": rig.slot.dropped,
        "max_late_s": played.max_late_s, "device": str(rig.trainer.device), "torch_threads": torch.get_num_threads(),
        "network": [net.input_height, net.input_width], "batch_size": cfg.train.batch_size,
        "classes": list(cfg.classes), "load_average": [load_start, os.getloadavg()[0]],
        "node": {key: rig.values[key] for key in ("mask.min_model_step", "mask.while_warming_up",
                                                   "inference_priority", "weights_sync_steps")},
        "keyframe": asdict(cfg.keyframe), "lr": cfg.train.lr,
    }


def _text(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    lines = ["window (s)     mIoU  all masks  masks  computed  steps  loss"]
    for w in report["windows"]:
        lines.append(f"{w['start_s']:5.1f}-{w['end_s']:<6.1f} {_text(w['miou']):>5s}  {_text(w['miou_all']):>9s}  "
                     f"{w['masks']:5d}  {w['masks_all']:8d}  {w['steps']:5d}  {_text(w['loss'])}")

    def reached(levels: dict[str, float | None]) -> str:
        return ", ".join(f"{k}: {'never' if v is None else f'{v:g} s'}" for k, v in levels.items())

    lines += [
        f"seconds to window mIoU (published masks) {reached(report['seconds_to_miou'])}",
        f"seconds to window mIoU (all masks, withheld included) {reached(report['seconds_to_miou_all_masks'])}",
        f"{report['duration_s']:.1f} s wall ({report['stream_s']:.1f} s of stream at rate {report['rate']:g}), "
        f"{report['frames']} frames: masks published {report['masks']} ({report['masks_per_s']:.2f}/s), computed "
        f"{report['masks_computed']} ({report['masks_computed_per_s']:.2f}/s), withheld {report['masks_withheld']}; "
        f"latency median {_text(report['latency_median_s'])} s, inference {_text(report['inference_median_s'])} s",
        f"training: {report['steps']} steps ({report['steps_per_s']:.2f}/s) to model step "
        f"{report['final_model_step']}; "
        f"keyframes {report['keyframes']} buffered of {report['keyframes_gated']} gated; load average "
        f"{report['load_average'][0]:.1f} -> {report['load_average'][1]:.1f}",
    ]
    for level, by_s in TARGETS.items():
        got = report["seconds_to_miou"][level]
        verdict = "met" if got is not None and got <= by_s else "not met"
        lines.append(f"target window mIoU >= {level} within {by_s:g} s (built-in stream, 10 Hz): {verdict}")
    return "\n".join(lines)
