"""`deal-ros train BAG [BAG...]`: train the CAM network offline from rosbags, no ROS needed.

Frames are decoded in a background worker (deal_ros.io.bag.prefetch) and fed into the trainer's
frame buffer while training runs, so training starts with the first batch instead of after the
whole bag has been read; step n samples the bag's first batch_size + n * train.new_frames_per_step
frames and waits for them if reading is slower, so a seed gives the same weights on a busy machine.
The trainer, its buffer and its checkpoints are the ones the ROS trainer node uses; the buffer keeps
at most buffer.max_frames frames (raise it with --set for long bags).

Tags say which classes are in view: one list for every frame (--tags), a std_msgs/String topic in
the bag (--tags-topic, or a topic named 'tags' found automatically), or time ranges (--tags-yaml).
Without --config the classes are --classes, or else the tags given.

Writes to --out: model.safetensors and train_log.json (loss history, read statistics), both atomically
and together, every --checkpoint-every steps and at the end, and loss_curves.png. Ctrl-C saves and exits
130, SIGTERM (timeout, docker stop, Slurm) saves and exits 143; a second signal does not abort the save.
Nothing trained is lost: the folder is checked (writable, room for a checkpoint) before any work; a save
that keeps failing goes to a rescue folder that the error names; weights that diverged to NaN/inf are
never saved over a good checkpoint. A new train.lr (etc.) given with --resume takes effect.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from deal_ros.cli import UserError, add_set_argument, save_on_stop, stop_exit_code, stop_reason
from deal_ros.cli.feeding import FrameFeeder, LossDivergedError, train_until
from deal_ros.cli.frames import (
    OFFLINE_KEYFRAME,
    NoFramesError,
    add_keyframe_options,
    add_tag_options,
    add_topic_options,
    default_classes,
    keyframe_gate,
    read_frames,
    skips_line,
    tag_source,
)
from deal_ros.cli.progress import progress_bar
from deal_ros.cli.run_log import (
    DivergedError,
    RunLog,
    SaveError,
    checkpoint_step,
    log_divergence,
    plot_losses_file,
    read_history,
    save_outputs,
)
from deal_ros.cli.validation import Validation
from deal_ros.config import DealRosConfig
from deal_ros.config.loading import parse_overrides
from deal_ros.errors import one_line
from deal_ros.online.parameters import load_parameter_file

LOG = logging.getLogger("deal_ros.train")

DEFAULT_STEPS = 1000
DEFAULT_PEER_TIMEOUT_S = 60.0
"""--peer-timeout: a torchrun rank gives up on the others after this long (joining, or at a step's collective)."""


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
    add_topic_options(parser, "use --set sync.slop=S (the nodes' key; sync.queue_size likewise)")
    add_keyframe_options(parser)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help="train until the step count reaches N, resumed steps included (default: %(default)s)")
    parser.add_argument("--out", metavar="DIR", help="checkpoint folder (default: checkpoint.directory of the config)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/model.safetensors")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save every N steps (default: checkpoint.period_steps; 0 = only at the end)")
    add_set_argument(parser, "config override, e.g. --set train.batch_size=4 --set loss.deal.weight=0.5; "
                             "frames are paired with sync.* and gated with keyframe.* as on the robot (keyframe "
                             "default here: every frame, unless --config or --set gives keyframe keys)")
    parser.add_argument("--val-bag", metavar="BAG", help="held-out bag: print and plot its mIoU while training")
    parser.add_argument("--val-gt", metavar="DIR",
                        help="ground-truth masks of --val-bag (frame index 000012.png or colour stamp in ns)")
    parser.add_argument("--val-every", type=int, default=100, metavar="N",
                        help="evaluate on --val-bag every N steps and at the end (default: %(default)s)")
    parser.add_argument("--peer-timeout", type=float, default=DEFAULT_PEER_TIMEOUT_S, metavar="S",
                        help="under torchrun: give up, with one line, when the other ranks have not joined or "
                             "reached the same step within S seconds (a rank died or stalled); more than rank "
                             "0 spends alone on a save or a --val-bag evaluation (default: %(default)g)")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace, tags: Any) -> DealRosConfig:
    """Config from --config / the resumed checkpoint / defaults, then --classes, --out and --set; keyframe keys
    that neither --config nor --set gives are OFFLINE_KEYFRAME (every frame)."""
    from deal_ros.frames.tags import parse_tags

    overrides = parse_overrides(args.overrides)
    offline = {key: value for key, value in OFFLINE_KEYFRAME.items() if key not in overrides}
    if args.out is not None:
        overrides["checkpoint.directory"] = args.out
    if args.checkpoint_every is not None:
        overrides["checkpoint.period_steps"] = args.checkpoint_every
    if args.classes is not None:
        overrides["classes"] = parse_tags(args.classes)
    if args.config is not None:
        return load_parameter_file(args.config, overrides, defaults=offline)
    overrides = {**offline, **overrides}
    if args.resume:
        from deal_ros.storage.checkpoint import CheckpointError, checkpoint_file, load_checkpoint  # torch: when needed

        try:
            base = load_checkpoint(checkpoint_file(args.out or DealRosConfig().checkpoint.directory)).config
        except CheckpointError as exc:
            raise UserError(f"--resume: {exc}") from None
        return base.updated(overrides)
    if "classes" not in overrides:
        overrides["classes"] = default_classes(args, tags)
    return DealRosConfig().updated(overrides)


def run(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    finally:
        distributed = sys.modules.get("deal_ros.training.distributed")  # not imported (torch!) by a refusal before it
        if distributed is not None:
            distributed.shutdown()  # leave the torchrun job, if any


def _train(args: argparse.Namespace) -> int:
    from deal_ros.storage.files import check_output_dir, refuse_non_folder, remove_stale_temp_files

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if not args.peer_timeout > 0:
        raise UserError("--peer-timeout must be > 0 seconds")
    role = "--out folder" if args.out is not None else "checkpoint.directory"
    if args.out is not None:
        refuse_non_folder(args.out, role)  # a file given as --out: say so, not "checkpoint not found"
        if Path(args.out).is_dir():
            check_output_dir(args.out, role)  # e.g. read-only: refused in the first second
    tags = tag_source(args)
    cfg = build_config(args, tags)
    from deal_ros.training.distributed import PeerLostError, attach, join_job

    job = join_job(cfg.train.device, args.peer_timeout)  # None unless started by torchrun
    main = job is None or job.is_main  # rank 0 alone touches the output folder
    out = check_output_dir(cfg.checkpoint.directory, role) if main else Path(cfg.checkpoint.directory)
    for stale in remove_stale_temp_files(out) if main else ():
        LOG.info("removed %s, left by a run that was killed", stale)

    from deal_ros.io.bag import ReadStats
    from deal_ros.online.keyframes import select_keyframes
    from deal_ros.storage.checkpoint import estimate_checkpoint_bytes
    from deal_ros.storage.files import check_free_space
    from deal_ros.training.trainer import OnlineTrainer

    if bool(args.val_bag) != bool(args.val_gt):
        raise UserError("--val-bag and --val-gt go together (held-out frames and their ground-truth masks)")
    validation = Validation(args.val_bag, args.val_gt, cfg, args.val_every) if args.val_bag else None
    read_stats = ReadStats()
    frames = select_keyframes(read_frames(args.bags, args, cfg, tags, read_stats),
                              keyframe_gate(cfg), lambda reason: read_stats.skip("keyframe", reason))
    if job is not None:
        frames = job.shard(frames)  # frame i trains on rank i % N only
    trainer = OnlineTrainer(cfg, device=None if job is None else job.device)
    if main:
        check_free_space(out, estimate_checkpoint_bytes(trainer.model, cfg.train.optimizer), role, "a checkpoint")
    previous: list[dict[str, Any]] = []
    if args.resume:
        trainer.resume()
        if trainer.resume_changes and main:
            print(f"resumed at step {trainer.step}; applied to the optimizer: {', '.join(trainer.resume_changes)}")
        previous = read_history(out / "train_log.json", trainer.step) if main else []
    elif trainer.checkpoint_path.exists():
        LOG.warning("%s exists and will be overwritten (use --resume to continue from it)", trainer.checkpoint_path)
    if job is not None:
        attach(trainer, job)  # rank 0's weights everywhere; gradients averaged over the ranks from now on
    if trainer.step >= args.steps:
        print(f"checkpoint {trainer.checkpoint_path} is at step {trainer.step} >= --steps {args.steps}: nothing to do")
        return 0

    start_step = trainer.step
    period = cfg.checkpoint.period_steps
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), frames)
    bar = progress_bar(total=args.steps, initial=start_step, desc="train", unit="step", disable=not main)
    run_log = RunLog(out, args, cfg, read_stats, feeder, start_step, start)
    run_log.world_size = 1 if job is None else job.world_size
    run_log.validation = validation

    def on_step(stats: Any) -> None:
        history.append(stats.as_dict())
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{stats.loss:.3f}", cls=f"{stats.loss_cls:.3f}", deal=f"{stats.loss_deal:.3f}",
                        seg=f"{stats.loss_seg:.3f}", fps=f"{feeder.frames_per_second:.1f}",
                        sps=f"{(stats.step - start_step) / elapsed:.2f}", refresh=False)
        bar.update(1)
        if main and validation is not None and validation.due(stats.step, args.steps):
            point = validation.evaluate(trainer)
            bar.write(f"step {point['step']}: held-out mask mIoU {point['mask_miou']:.3f}, "
                      f"pseudo-label mIoU {point['pseudo_miou']:.3f}")
        diffuse = stats.diffuse_classes
        if main and diffuse and stats.step % 100 == 0:
            bar.write(f"step {stats.step}: pseudo-labels of {diffuse} cover most of the frames they are tagged in "
                      "(class recognised from the whole frame)")
        if period and stats.step % period == 0 and stats.step < args.steps:
            if job is not None:
                run_log.frames_per_rank = job.gather(feeder.frames_added)  # every rank is at this step
            if main:
                save_outputs(trainer, run_log, previous + history, "running")

    def finish(status: str) -> Path:
        bar.close()
        feeder.stop()
        if job is not None and status == "finished":
            run_log.frames_per_rank = job.gather(feeder.frames_added)
            run_log.weights_identical = job.identical(trainer.model.parameters())  # buffers: rank 0's, as in DDP
        elif job is not None:  # after an interrupt a rank may be gone: only rank 0's count is known
            run_log.frames_per_rank = [feeder.frames_added, *([None] * (job.world_size - 1))]
        if not main:
            return trainer.checkpoint_path
        path = save_outputs(trainer, run_log, previous + history, status)
        if previous or history:
            plot_losses_file(previous + history, out / "loss_curves.png")
        if validation is not None and validation.curve:
            validation.plot(out / "val_miou.png")
        return path

    save_on_stop()  # a second signal must not abort the save below
    try:
        train_until(trainer, feeder, args.steps, on_step)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM; later signals cannot abort this save (deal_ros.cli)
        path = finish("interrupted")
        if main:
            print(f"\n{stop_reason(stop)} at step {trainer.step}: checkpoint saved to {path}", file=sys.stderr)
        return stop_exit_code(stop)
    except BaseException as exc:
        bar.close()
        feeder.stop()
        if isinstance(exc, NoFramesError):
            raise NoFramesError(f"{exc} in {', '.join(args.bags)} ({skips_line(read_stats)})") from None
        if isinstance(exc, LossDivergedError):  # nothing worth saving: keep the last good checkpoint
            kept = checkpoint_step(trainer.checkpoint_path)
            where = f"{trainer.checkpoint_path} (step {kept}) is kept" if kept is not None else "nothing was saved"
            logged = log_divergence(run_log, previous + history) if main else "rank 0 writes the log"
            raise LossDivergedError(f"{exc}; {where}; {logged}") from None
        if main and trainer.step > start_step and not isinstance(exc, SaveError):
            try:
                path = save_outputs(trainer, run_log, previous + history, "failed")
            except DivergedError:
                raise
            except SaveError as save_exc:
                raise SaveError(f"{one_line(exc)}; and {save_exc}") from None
            saved = f"the {trainer.step - start_step} step(s) trained so far are saved in {path}"
            if isinstance(exc, PeerLostError):  # the one line of a job that lost a rank
                raise PeerLostError(f"{exc}; {saved}") from None
            LOG.warning("%s", saved)
        raise
    path = finish("finished")
    if job is not None:
        job.wait_for_all()  # rank 0 has written everything; all ranks leave together
    if not main:
        return 0
    wall = time.perf_counter() - start
    reading = "all frames read" if feeder.done.is_set() and feeder.error is None else "reading stopped at --steps"
    print(f"trained {trainer.step - start_step} step(s) to step {trainer.step} in {wall:.1f} s "
          f"({(trainer.step - start_step) / wall:.2f} steps/s); {feeder.frames_added} frame(s) buffered "
          f"at {feeder.frames_per_second:.1f} frames/s ({reading})")
    if job is not None:
        print(f"{job.world_size} processes ({job.backend}), batch {trainer.batch_size} each; frames per rank: "
              f"{run_log.frames_per_rank}; weights identical on all ranks: {run_log.weights_identical}")
    print(read_stats.summary())
    print(f"checkpoint: {path}\nlog: {out / 'train_log.json'}\nloss curves: {out / 'loss_curves.png'}")
    return 0


