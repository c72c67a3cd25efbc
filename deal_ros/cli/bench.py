"""`deal-ros bench decode | train-io | quality | live`: speed (each against a baseline in the same run), label quality.

decode    image decoding vs a memcpy of the same bytes (target: zero-copy decoders <= 2x memcpy).
train-io  training steps/s when frames come from a bag, read in the background worker exactly as
          `deal-ros train` reads them, vs steps/s on the same frames already in memory, same config
          (target: the bag within 10 % of memory). Without BAG a RealSense-like bag of synthetic
          scenes at camera resolution is written to a temporary folder first. On a CPU the
          reader takes cores from the trainer, so the gap grows with the frames read per step
          (2 by default, about what a training run reads; the report gives the cost per frame).

quality   label quality of training recipes (deal_ros.cli.quality).
live      mask quality over time while training live, wired as the onboard process (deal_ros.cli.bench_live).

Exit code 1 when a target is missed (timings on a busy machine are noisy: rerun before trusting one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deal_ros.cli import UserError, add_set_argument, bench_live, quality
from deal_ros.cli.feeding import FrameFeeder, train_until
from deal_ros.config.loading import parse_overrides
from deal_ros.online.training_loop import ALL_FRAMES
from deal_ros.storage.files import atomic_write_text, check_output_dir

TRAIN_IO_TARGET = 0.9
"""Least allowed (bag steps/s) / (memory steps/s)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="speed (decode, train-io), label quality (quality) and live "
                                   "mask quality (live) benchmarks",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    decode = which.add_parser("decode", help="image decoding vs memcpy of the same bytes")
    decode.add_argument("--width", type=int, default=640)
    decode.add_argument("--height", type=int, default=480)
    decode.add_argument("--repeat", type=int, default=9)
    decode.set_defaults(func=run_decode)

    io = which.add_parser("train-io", help="training steps/s from a bag vs from memory")
    io.add_argument("bag", nargs="?", metavar="BAG", help="bag with a tags topic (default: a synthetic bag)")
    io.add_argument("--steps", type=int, default=16, help="timed steps per arm and round (default: %(default)s)")
    io.add_argument("--rounds", type=int, default=2, help="rounds, alternating which arm goes first "
                    "(default: %(default)s)")
    io.add_argument("--frames", type=int, default=32,
                    help="frames of the synthetic bag; 2 per step is a typical training run (default: %(default)s)")
    io.add_argument("--camera-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                    help="image size of the synthetic bag (default: %(default)s)")
    io.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                    help="network input size (default: %(default)s)")
    io.add_argument("--batch", type=int, default=8, help="batch size (default: %(default)s)")
    add_set_argument(io, "further config override")
    io.add_argument("--json", dest="json_out", metavar="FILE", help="write the result as JSON")
    io.set_defaults(func=run_train_io)
    quality.register(which)
    bench_live.register(which)


def run_decode(args: argparse.Namespace) -> int:
    from deal_ros.lab.benchmarks import bench_decode

    if min(args.width, args.height, args.repeat) < 1:
        raise UserError("--width, --height and --repeat must be >= 1")
    report = bench_decode(args.width, args.height, args.repeat)
    print(report.format())
    return 0 if report.ok else 1


@dataclass
class TrainIOResult:
    steps: int
    """Timed steps per arm (all rounds)."""
    rounds: int
    frames: int
    """Frames in the bag; the bag arm reads them all once per round."""
    memory_steps_per_s: float
    bag_steps_per_s: float
    bag_frames_per_s: float
    first_batch_s: float
    """Longest time from opening the bag until the first batch was buffered."""
    round_ratios: list[float]
    """bag / memory steps/s of each round, to see the noise."""
    memory_cpu_s: float
    bag_cpu_s: float
    """CPU seconds of this process (all threads) per arm: the bag arm's extra is the reading."""

    @property
    def ratio(self) -> float:
        return self.bag_steps_per_s / self.memory_steps_per_s

    @property
    def cpu_ratio(self) -> float:
        """memory / bag CPU time: what `ratio` would be if the trainer had no core to spare for reading."""
        return self.memory_cpu_s / self.bag_cpu_s

    @property
    def frames_per_step(self) -> float:
        return self.frames * self.rounds / self.steps

    @property
    def read_cpu_ms_per_frame(self) -> float:
        return 1000 * (self.bag_cpu_s - self.memory_cpu_s) / (self.frames * self.rounds)

    def format(self) -> str:
        verdict = "OK" if self.ratio >= TRAIN_IO_TARGET else "BELOW TARGET"
        step_cpu_ms = 1000 * self.memory_cpu_s / self.steps
        return "\n".join([
            f"{self.steps} steps per arm in {self.rounds} round(s); the bag arm reads all {self.frames} frames "
            f"each round ({self.frames_per_step:.1f} frames per step); per-round ratios "
            + ", ".join(f"{r:.3f}" for r in self.round_ratios),
            f"memory: {self.memory_steps_per_s:.3f} steps/s (frames decoded and buffered before timing)",
            f"bag:    {self.bag_steps_per_s:.3f} steps/s (reading in the background at {self.bag_frames_per_s:.1f} "
            f"frames/s; first batch after {self.first_batch_s:.2f} s)",
            f"ratio bag / memory: {self.ratio:.3f} (target >= {TRAIN_IO_TARGET:g}): {verdict}",
            f"CPU time memory / bag: {self.memory_cpu_s:.1f} s / {self.bag_cpu_s:.1f} s = {self.cpu_ratio:.3f} "
            "(this process, all threads; inflated too when other processes take the cores)",
            f"reading costs {self.read_cpu_ms_per_frame:.1f} ms CPU per frame, a step {step_cpu_ms:.0f} ms: "
            "the overhead scales with frames read per step" if self.read_cpu_ms_per_frame > 0 else
            "reading cost per frame lost in the noise of this run",
        ])


def _timed_run(cfg: Any, frames: Any, steps: int, preload: bool) -> tuple[float, float, FrameFeeder, float]:
    """Wall and CPU seconds for `steps` steps of a fresh trainer, its feeder, and the wait for the first batch.

    preload: every frame is in the buffer before the clock starts (the memory baseline); otherwise
    the clock starts when the feeder opens the bag, as in `deal-ros train`.
    """
    from deal_ros.cli.feeding import wait_for_batch
    from deal_ros.training.trainer import OnlineTrainer

    trainer = OnlineTrainer(cfg)
    if preload:
        for frame in frames:
            trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
        frames = []
    start, start_cpu = time.perf_counter(), time.process_time()
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), frames)
    wait_for_batch(trainer, feeder)
    first_batch = time.perf_counter() - start
    train_until(trainer, feeder, steps)
    feeder.admit(ALL_FRAMES)  # the rest of the bag is read too: its cost belongs to the bag arm
    feeder.stop()
    return time.perf_counter() - start, time.process_time() - start_cpu, feeder, first_batch


def bench_train_io(bag: str | Path, cfg: Any, steps: int, rounds: int = 2) -> TrainIOResult:
    """Same config, same frames: after a warm-up, `rounds` x (`steps` from memory, `steps` from the bag).

    The arms alternate which goes first, and steps/s is total steps over total time per arm, so that
    load from other processes drifting during the run biases neither arm.
    """
    from deal_ros.io.bag import iter_rgbd_frames

    def read() -> Any:
        return iter_rgbd_frames(bag, classes=cfg.classes, depth_float_unit=cfg.depth.float_unit)

    in_memory = list(read())
    if not in_memory:
        raise UserError(f"no usable frames in {bag}")
    _timed_run(cfg, in_memory, min(2, steps), preload=True)  # one-off costs (threads, kernels) untimed
    wall = {"memory": 0.0, "bag": 0.0}
    cpu = dict(wall)
    first_batch = 0.0
    frames_per_s: list[float] = []
    round_ratios: list[float] = []
    for index in range(rounds):
        round_wall = {}
        for arm in ("memory", "bag") if index % 2 == 0 else ("bag", "memory"):
            source = in_memory if arm == "memory" else read()
            round_wall[arm], arm_cpu, feeder, wait = _timed_run(cfg, source, steps, preload=arm == "memory")
            wall[arm] += round_wall[arm]
            cpu[arm] += arm_cpu
            if arm == "bag":
                frames_per_s.append(feeder.frames_per_second)
                first_batch = max(first_batch, wait)
        round_ratios.append(round_wall["memory"] / round_wall["bag"])
    total = steps * rounds
    return TrainIOResult(steps=total, rounds=rounds, frames=len(in_memory), memory_steps_per_s=total / wall["memory"],
                         bag_steps_per_s=total / wall["bag"], bag_frames_per_s=min(frames_per_s),
                         first_batch_s=first_batch, round_ratios=round_ratios, memory_cpu_s=cpu["memory"],
                         bag_cpu_s=cpu["bag"])


def run_train_io(args: argparse.Namespace) -> int:
    from deal_ros.config import DealRosConfig
    from deal_ros.io.bag import BagError, scan_tag_names
    from deal_ros.lab.benchmarks import write_scene_bag
    from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes

    if args.steps < 1 or args.rounds < 1:
        raise UserError("--steps and --rounds must be >= 1")
    if args.json_out:  # a folder that cannot take the report is refused before the benchmark, not after
        if Path(args.json_out).is_dir():
            raise UserError(f"--json {args.json_out} is a folder; give a file name")
        check_output_dir(Path(args.json_out).parent, "--json folder")
    with tempfile.TemporaryDirectory(prefix="deal_ros_bench_") as tmp:
        try:
            if args.bag is None:
                height, width = args.camera_size
                scenes = make_tabletop_scenes(min(args.frames, 8), height, width, list(DEFAULT_CLASSES), seed=0)
                bag: str | Path = write_scene_bag(Path(tmp) / "bench_bag", scenes, args.frames)
                classes = list(DEFAULT_CLASSES)
            else:
                bag = args.bag
                _, classes = scan_tag_names(bag)
                if not classes:
                    raise UserError(f"{bag} has no tags topic with class names: train-io needs one")
            overrides = {"model.input_height": args.size[0], "model.input_width": args.size[1],
                         "train.batch_size": args.batch, **parse_overrides(args.overrides)}
            cfg = DealRosConfig(classes=classes).updated(overrides)
            source = args.bag or f"synthetic, {args.frames} frames of {args.camera_size[1]}x{args.camera_size[0]}"
            print(f"bag: {source}; {cfg.model.backbone} at {cfg.model.input_height}x{cfg.model.input_width}, "
                  f"batch {cfg.train.batch_size}, device {cfg.train.device}")
            result = bench_train_io(bag, cfg, args.steps, args.rounds)
        except BagError as exc:
            raise UserError(str(exc)) from None
    print(result.format())
    if args.json_out:
        report = {**asdict(result), "ratio": result.ratio, "cpu_ratio": result.cpu_ratio,
                  "frames_per_step": result.frames_per_step, "read_cpu_ms_per_frame": result.read_cpu_ms_per_frame}
        atomic_write_text(args.json_out, json.dumps(report, indent=1))
    return 0 if result.ratio >= TRAIN_IO_TARGET else 1
