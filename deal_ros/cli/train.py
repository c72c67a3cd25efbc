"""`deal-ros train BAG [BAG...]`: train the CAM network offline from rosbags, no ROS needed.

Frames are decoded in a background worker (deal_ros.io.bag.prefetch) and fed into the trainer's
frame buffer while training runs, so training starts with the first batch instead of after the
whole bag has been read. The trainer, its buffer and its checkpoints are the ones the ROS trainer
node uses; the buffer keeps at most buffer.max_frames frames (raise it with --set for long bags).

Tags say which classes are in view: one list for every frame (--tags), a std_msgs/String topic in
the bag (--tags-topic, or a topic named 'tags' found automatically), or time ranges (--tags-yaml).
Without --config the classes are --classes, or else the tags given.

Writes to --out: model.safetensors (atomically, every --checkpoint-every steps and at the end),
train_log.json (loss history, read statistics) and loss_curves.png. Ctrl-C saves and exits 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from deal_ros.cli import UserError, parse_overrides
from deal_ros.config import DealConfig, load_config

LOG = logging.getLogger("deal_ros.train")

DEFAULT_STEPS = 1000


# ------------------------------------------------------------------------------------------------
# Options shared with `deal-ros label`


def add_tag_options(parser: argparse.ArgumentParser) -> None:
    """--tags / --tags-topic / --tags-yaml (at most one); none = a tags topic found in the bag."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tags", metavar="'A,B'", help="comma-separated class names in view for the whole bag")
    group.add_argument("--tags-topic", metavar="TOPIC",
                       help="std_msgs/String topic with the tags (default: a topic named 'tags', if any)")
    group.add_argument("--tags-yaml", metavar="FILE",
                       help="tag schedule: list of {start_s, end_s, tags} over bag time (see TagSchedule)")


def add_topic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rgb-topic", help="colour image topic (default: found from driver names)")
    parser.add_argument("--depth-topic", help="depth image topic aligned to colour (default: found from driver names)")
    parser.add_argument("--slop", type=float, default=0.05, metavar="S",
                        help="max RGB/depth stamp difference in seconds (default: %(default)s)")


def tag_source(args: argparse.Namespace) -> Any:
    """The `tags` argument of iter_rgbd_frames for the parsed options (None = from a topic)."""
    from deal_ros.io.tags import TagSchedule

    if args.tags is not None:
        return args.tags
    if args.tags_yaml is not None:
        try:
            return TagSchedule.from_yaml(args.tags_yaml)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return None


def default_classes(args: argparse.Namespace, tags: Any) -> list[str]:
    """Class names when no config names them: the tags given, in order of appearance."""
    from deal_ros.io.bag import scan_tag_names
    from deal_ros.io.tags import TagSchedule, parse_tags

    if isinstance(tags, str):
        names = parse_tags(tags)
    elif isinstance(tags, TagSchedule):
        names = list(dict.fromkeys(t for r in tags.ranges for t in r.tags))
    else:
        topic, names = scan_tag_names(args.bags, args.tags_topic)
        if topic is None:
            raise UserError("no tags: the bag has no tags topic (std_msgs/String named 'tags'); "
                            "give --tags, --tags-topic or --tags-yaml")
    if not names:
        raise UserError("the tags name no class; give the class names with --classes")
    return names


def one_line(exc: BaseException) -> str:
    """The message on one line (a state-dict mismatch spans several), so the user sees one error line."""
    return " ".join(str(exc).split())


def read_frames(bags: str | Sequence[str], args: argparse.Namespace, classes: Sequence[str], tags: Any, stats: Any,
                **kwargs: Any) -> Any:
    """iter_rgbd_frames for the parsed topic / tag / sync options; bad values become a UserError."""
    from deal_ros.io.bag import iter_rgbd_frames

    try:
        return iter_rgbd_frames(bags, args.rgb_topic, args.depth_topic, tags_topic=args.tags_topic,
                                slop_s=args.slop, tags=tags, classes=classes, stats=stats, **kwargs)
    except ValueError as exc:  # BagError, UnknownTagError, or an option out of range
        raise UserError(one_line(exc)) from None


# ------------------------------------------------------------------------------------------------
# Feeding frames into the trainer while it trains


class FrameFeeder:
    """Adds frames to a trainer's buffer from a worker thread; the bag is decoded in prefetch's thread.

    Errors of the source (a corrupt bag, a missing topic) are kept and re-raised by `check()` in
    the training thread, so they end the command with a message instead of dying in a thread.
    """

    def __init__(self, add: Callable[[Any], None], frames: Iterable[Any], max_queue: int = 16) -> None:
        from deal_ros.io.bag import prefetch

        self.frames_added = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._add = add
        self._source = prefetch(frames, max_queue=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deal_ros-feeder", daemon=True)
        self.start_time = time.perf_counter()
        self.end_time: float | None = None
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self._source:
                if self._stop.is_set():
                    break
                self._add(frame)
                self.frames_added += 1
        except BaseException as exc:  # handed to the training thread by check()
            self.error = exc
        finally:
            self._source.close()  # type: ignore[attr-defined]
            self.end_time = time.perf_counter()
            self.done.set()

    def check(self) -> None:
        """Re-raise the source's error in the caller's thread."""
        if self.error is not None:
            raise self.error

    @property
    def frames_per_second(self) -> float:
        elapsed = (self.end_time or time.perf_counter()) - self.start_time
        return self.frames_added / elapsed if elapsed > 0 else 0.0

    def stop(self) -> None:
        """Stop reading (the bag is closed by the worker); returns at once if reading has ended."""
        self._stop.set()
        self._thread.join(timeout=10.0)


def wait_for_batch(trainer: Any, feeder: FrameFeeder, poll_s: float = 0.02) -> None:
    """Block until the buffer holds a batch (or all frames the bag has); raise if there are none."""
    while len(trainer.buffer) < trainer.batch_size and not feeder.done.is_set():
        feeder.check()
        feeder.done.wait(poll_s)
    feeder.check()
    if len(trainer.buffer) == 0:
        raise UserError("no usable frames")


def train_until(trainer: Any, feeder: FrameFeeder, steps: int, on_step: Callable[[Any], None] | None = None) -> None:
    """Run trainer steps until trainer.step == steps, starting as soon as a batch is buffered."""
    wait_for_batch(trainer, feeder)
    while trainer.step < steps:
        feeder.check()
        stats = trainer.train_step()
        if stats is not None and on_step is not None:
            on_step(stats)


# ------------------------------------------------------------------------------------------------
# The command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the segmentation network from rosbags (no ROS needed)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directory, .db3, .mcap or ROS 1 .bag")
    add_tag_options(parser)
    parser.add_argument("--config", help="YAML config (plain or ROS 2 parameter file)")
    parser.add_argument("--classes", metavar="'A,B'",
                        help="foreground class names (default: from --config, else the tags given)")
    add_topic_options(parser)
    parser.add_argument("--min-gap", type=float, default=0.0, metavar="S",
                        help="drop frames closer than S seconds to the previous one (default: keep all)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help="train until the step count reaches N, resumed steps included (default: %(default)s)")
    parser.add_argument("--out", metavar="DIR", help="checkpoint folder (default: checkpoint.directory of the config)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/model.safetensors")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save every N steps (default: checkpoint.period_steps; 0 = only at the end)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.batch_size=4 --set loss.deal.weight=0.5")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace, tags: Any) -> DealConfig:
    """Config from --config / the resumed checkpoint / defaults, then --classes, --out and --set."""
    from deal_ros.checkpoint import CheckpointError, load_checkpoint
    from deal_ros.io.tags import parse_tags

    overrides = parse_overrides(args.overrides)
    if args.out is not None:
        overrides["checkpoint.directory"] = args.out
    if args.checkpoint_every is not None:
        overrides["checkpoint.period_steps"] = args.checkpoint_every
    if args.classes is not None:
        overrides["classes"] = parse_tags(args.classes)
    if args.config is not None:
        return load_config(args.config, overrides)
    if args.resume:
        directory = Path(args.out or DealConfig().checkpoint.directory)
        try:
            base = load_checkpoint(directory / "model.safetensors").config
        except CheckpointError as exc:
            raise UserError(f"--resume: {exc}") from None
        return base.updated(overrides)
    if "classes" not in overrides:
        overrides["classes"] = default_classes(args, tags)
    return DealConfig().updated(overrides)


def skips_line(stats: Any) -> str:
    """ReadStats in one line: frames read and skips by reason, for error messages."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.skipped.items()))
    return f"{stats.frames} frame(s) read" + (f"; skipped: {reasons}" if reasons else "")


def run(args: argparse.Namespace) -> int:
    from deal_ros.checkpoint import CheckpointError
    from deal_ros.device import DeviceError
    from deal_ros.io.bag import BagError
    from deal_ros.io.tags import UnknownTagError

    try:
        return _train(args)
    except (BagError, UnknownTagError, CheckpointError, DeviceError) as exc:
        raise UserError(one_line(exc)) from None


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deal_ros.experiment import plot_losses
    from deal_ros.io.bag import ReadStats
    from deal_ros.trainer import OnlineTrainer

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    tags = tag_source(args)
    cfg = build_config(args, tags)
    read_stats = ReadStats()
    frames = read_frames(args.bags, args, cfg.classes, tags, read_stats, min_gap_s=args.min_gap)
    trainer = OnlineTrainer(cfg)
    out = Path(cfg.checkpoint.directory)
    out.mkdir(parents=True, exist_ok=True)
    previous: list[dict[str, Any]] = []
    if args.resume:
        trainer.resume()
        log_path = out / "train_log.json"
        if log_path.is_file():
            previous = json.loads(log_path.read_text()).get("history", [])
    elif trainer.checkpoint_path.exists():
        LOG.warning("%s exists and will be overwritten (use --resume to continue from it)", trainer.checkpoint_path)
    if trainer.step >= args.steps:
        print(f"checkpoint {trainer.checkpoint_path} is at step {trainer.step} >= --steps {args.steps}: nothing to do")
        return 0

    start_step = trainer.step
    period = cfg.checkpoint.period_steps
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), frames)
    bar = tqdm(total=args.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def on_step(stats: Any) -> None:
        history.append(stats.as_dict())
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{stats.loss:.3f}", cls=f"{stats.loss_cls:.3f}", deal=f"{stats.loss_deal:.3f}",
                        seg=f"{stats.loss_seg:.3f}", fps=f"{feeder.frames_per_second:.1f}",
                        sps=f"{(stats.step - start_step) / elapsed:.2f}", refresh=False)
        bar.update(1)
        if period and stats.step % period == 0 and stats.step < args.steps:
            trainer.save()

    def finish(status: str) -> Path:
        bar.close()
        feeder.stop()
        path = trainer.save()
        _write_log(out, args, cfg, previous + history, read_stats, feeder, status, start_step,
                   time.perf_counter() - start)
        if previous or history:
            plot_losses({"train": previous + history}, str(out / "loss_curves.png"))
        return path

    try:
        train_until(trainer, feeder, args.steps, on_step)
    except KeyboardInterrupt:
        path = finish("interrupted")
        print(f"\ninterrupted at step {trainer.step}: checkpoint saved to {path}", file=sys.stderr)
        return 130
    except UserError as exc:
        bar.close()
        feeder.stop()
        raise UserError(f"{exc} in {', '.join(args.bags)} ({skips_line(read_stats)})") from None
    except BaseException:
        bar.close()
        feeder.stop()
        if trainer.step > start_step:
            LOG.warning("saving the %d step(s) trained so far to %s", trainer.step - start_step, trainer.save())
        raise
    path = finish("finished")
    wall = time.perf_counter() - start
    reading = "all frames read" if feeder.done.is_set() and feeder.error is None else "reading stopped at --steps"
    print(f"trained {trainer.step - start_step} step(s) to step {trainer.step} in {wall:.1f} s "
          f"({(trainer.step - start_step) / wall:.2f} steps/s); {feeder.frames_added} frame(s) buffered "
          f"at {feeder.frames_per_second:.1f} frames/s ({reading})")
    print(read_stats.summary())
    print(f"checkpoint: {path}\nlog: {out / 'train_log.json'}\nloss curves: {out / 'loss_curves.png'}")
    return 0


def _write_log(out: Path, args: argparse.Namespace, cfg: DealConfig, history: list[dict[str, Any]], read_stats: Any,
               feeder: FrameFeeder, status: str, start_step: int, wall_s: float) -> None:
    log = {
        "status": status,
        "bags": list(args.bags),
        "steps": history[-1]["step"] if history else start_step,
        "resumed_from_step": start_step,
        "wall_time_s": round(wall_s, 3),
        "frames_buffered": feeder.frames_added,
        "frames_per_second": round(feeder.frames_per_second, 2),
        "read": {"frames": read_stats.frames, "skipped": dict(read_stats.skipped),
                 "examples": read_stats.examples, "warnings": read_stats.warnings,
                 "messages": dict(read_stats.messages)},
        "config": cfg.to_dict(),
        "history": history,
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
