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
from typing import TYPE_CHECKING, Any

from deal_ros.cli import (
    UserError,
    add_set_argument,
    hold_stop_signals,
    save_on_stop,
    stop_exit_code,
    stop_reason,
)
from deal_ros.cli.feeding import FrameFeeder, train_until
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
from deal_ros.online.training_loop import OTHER_SHARE, KeyframeIntake, LossDivergedError

if TYPE_CHECKING:
    import torch

    from deal_ros.training.distributed import DistContext
    from deal_ros.training.trainer import StepStats

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
    lost: BaseException | None = None
    try:
        return _train(args)
    except Exception as exc:
        lost = exc
        raise
    finally:
        distributed = sys.modules.get("deal_ros.training.distributed")  # not imported (torch!) by a refusal before it
        if distributed is not None:  # leave the torchrun job, if any
            distributed.shutdown(peer_lost=isinstance(lost, distributed.PeerLostError))


def _check_args(args: argparse.Namespace) -> str:
    """Refuse bad numbers and an unusable --out in the first second; returns the output folder's role."""
    from deal_ros.storage.files import check_output_dir, refuse_non_folder

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if not args.peer_timeout > 0:
        raise UserError("--peer-timeout must be > 0 seconds")
    role = "--out folder" if args.out is not None else "checkpoint.directory"
    if args.out is not None:
        refuse_non_folder(args.out, role)  # a file given as --out: say so, not "checkpoint not found"
        if Path(args.out).is_dir():
            check_output_dir(args.out, role)  # e.g. read-only: refused in the first second
    return role


def _train(args: argparse.Namespace) -> int:
    from deal_ros.compute.device import resolve_device
    from deal_ros.storage.files import check_output_dir
    from deal_ros.training.distributed import join_job

    role = _check_args(args)
    tags = tag_source(args)
    cfg = build_config(args, tags)
    job = join_job(cfg.train.device, args.peer_timeout)  # None unless started by torchrun
    device = resolve_device(cfg.train.device) if job is None else job.device
    cfg = cfg.for_device(device.type)  # the network size trained at, for the run log and --val-bag alike
    main = job is None or job.is_main  # rank 0 alone touches the output folder
    out = check_output_dir(cfg.checkpoint.directory, role) if main else Path(cfg.checkpoint.directory)
    if bool(args.val_bag) != bool(args.val_gt):
        raise UserError("--val-bag and --val-gt go together (held-out frames and their ground-truth masks)")
    validation = Validation(args.val_bag, args.val_gt, cfg, args.val_every) if args.val_bag else None
    session = TrainSession(args, cfg, tags, job, device, out, role, validation)
    if session.trainer.step >= args.steps:
        print(f"checkpoint {session.trainer.checkpoint_path} is at step {session.trainer.step} >= --steps "
              f"{args.steps}: nothing to do")
        return 0
    return session.train()


class TrainSession:
    """One `deal-ros train` run: the trainer, its bag feed, the progress bar and what is written to --out."""

    def __init__(self, args: argparse.Namespace, cfg: DealRosConfig, tags: Any, job: DistContext | None,
                 device: torch.device, out: Path, role: str, validation: Validation | None) -> None:
        from deal_ros.io.bag import ReadStats
        from deal_ros.storage.checkpoint import estimate_checkpoint_bytes
        from deal_ros.storage.files import check_free_space
        from deal_ros.training.distributed import attach
        from deal_ros.training.trainer import OnlineTrainer

        self.args, self.cfg, self.job, self.out = args, cfg, job, out
        self.main = job is None or job.is_main
        self.validation = validation
        self.read_stats = ReadStats()
        self.frames = read_frames(args.bags, args, cfg, tags, self.read_stats)
        self.gate = keyframe_gate(cfg)
        self.trainer = trainer = OnlineTrainer(cfg, device=device)
        if self.main:
            check_free_space(out, estimate_checkpoint_bytes(trainer.model, cfg.train.optimizer), role, "a checkpoint")
        self.previous: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        if args.resume:
            trainer.resume()
            if trainer.resume_changes and self.main:
                print(f"resumed at step {trainer.step}; applied to the optimizer: {', '.join(trainer.resume_changes)}")
            self.previous = read_history(out / "train_log.json", trainer.step) if self.main else []
        elif trainer.checkpoint_path.exists():
            LOG.warning("%s exists and will be overwritten (use --resume to continue from it)", trainer.checkpoint_path)
        if job is not None:
            attach(trainer, job)  # rank 0's weights everywhere; gradients averaged over the ranks from now on
        self.start_step = trainer.step
        self.trusted = trainer.trust.trusted
        # Every rank gates every frame as one process would; keyframe k trains on rank k % N only.
        self.intake = KeyframeIntake(trainer, self.gate, None if job is None else job.owns)

    def _offer(self, frame: Any) -> bool:
        """A frame read from the bag into the trainer node's intake (keyframe gate, depth check, buffer)."""
        result = self.intake.offer(frame.stamp_ns * 1e-9, lambda: frame.rgb, lambda: frame.depth_m, frame.tags)
        if result.degenerate:
            self.read_stats.skip(result.reason, result.degenerate)
        elif not result.accepted and result.reason != OTHER_SHARE:
            self.read_stats.skip("keyframe", result.reason)
        return result.accepted

    # -- during training ------------------------------------------------------------------------------
    def _on_step(self, stats: StepStats) -> None:
        self.history.append(stats.as_dict())
        elapsed = time.perf_counter() - self.start
        self.bar.set_postfix(loss=f"{stats.loss:.3f}", cls=f"{stats.loss_cls:.3f}", deal=f"{stats.loss_deal:.3f}",
                             seg=f"{stats.loss_seg:.3f}", fps=f"{self.feeder.frames_per_second:.1f}",
                             sps=f"{(stats.step - self.start_step) / elapsed:.2f}", refresh=False)
        self.bar.update(1)
        if self.main and self.validation is not None and self.validation.due(stats.step, self.args.steps):
            point = self.validation.evaluate(self.trainer)
            self.bar.write(f"step {point['step']}: held-out mask mIoU {point['mask_miou']:.3f}, "
                           f"pseudo-label mIoU {point['pseudo_miou']:.3f}")
        if self.main and stats.masks_trusted != self.trusted:
            self.trusted = stats.masks_trusted
            self.bar.write(f"step {stats.step}: {self._trust_line()}")
        diffuse = stats.diffuse_classes
        if self.main and diffuse and stats.step % 100 == 0:
            self.bar.write(f"step {stats.step}: pseudo-labels of {diffuse} cover most of the frames they are tagged "
                           "in (class recognised from the whole frame)")

    def _trust_line(self) -> str:
        from deal_ros.online.status import trust_message

        return trust_message(self.trainer.trust.summary(self.trainer.cfg.trust))

    def _save_period(self, why: str) -> None:
        if self.job is not None:
            self.run_log.frames_per_rank = self.job.gather(self.feeder.frames_added)  # every rank is at this step
        if self.main:
            save_outputs(self.trainer, self.run_log, self.previous + self.history, "running")

    def train(self) -> int:
        """Train to --steps and save; exit code 0, or 130 / 143 with the checkpoint saved when stopped."""
        trainer = self.trainer
        self.start = time.perf_counter()
        self.feeder = FrameFeeder(self._offer, self.frames)
        self.bar = progress_bar(total=self.args.steps, initial=self.start_step, desc="train", unit="step",
                                disable=not self.main)
        self.run_log = RunLog(self.out, self.args, self.cfg, self.read_stats, self.feeder, self.start_step, self.start)
        self.run_log.world_size = 1 if self.job is None else self.job.world_size
        self.run_log.validation = self.validation
        save_on_stop()  # a second signal must not abort the save below
        try:
            try:
                train_until(trainer, self.feeder, self.args.steps, self._on_step, self._save_period)
            except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM; later signals cannot abort this save (deal_ros.cli)
                if self.job is None or stop_reason(stop) == "interrupted":
                    path = self._finish("interrupted")
                    if self.main:
                        print(f"\n{stop_reason(stop)} at step {trainer.step}: checkpoint saved to {path}",
                              file=sys.stderr)
                    return stop_exit_code(stop)
                raise self._stopped_rank() from None
        except BaseException as exc:
            self._fail(exc)
            raise
        path = self._finish("finished")
        if self.job is not None:
            self.job.wait_for_all()  # rank 0 has written everything; all ranks leave together
        if self.main:
            self._summary(path)
        return 0

    def _stopped_rank(self) -> Exception:
        """torchrun stops every rank with SIGTERM when one fails: the rank ends with one line, rank 0 saving first."""
        from deal_ros.training.distributed import PeerLostError

        assert self.job is not None
        return PeerLostError(f"rank {self.job.rank} of {self.job.world_size}: stopped by SIGTERM (torchrun stops "
                             "every rank when one fails; its report names the rank)")

    # -- the end ----------------------------------------------------------------------------------------
    def _finish(self, status: str) -> Path:
        self.bar.close()
        self.feeder.stop()
        job, run_log, trainer = self.job, self.run_log, self.trainer
        if job is not None and status == "finished":
            run_log.frames_per_rank = job.gather(self.feeder.frames_added)
            run_log.weights_identical = job.identical(trainer.model.parameters())  # buffers: rank 0's, as in DDP
        elif job is not None:  # after an interrupt a rank may be gone: only rank 0's count is known
            run_log.frames_per_rank = [self.feeder.frames_added, *([None] * (job.world_size - 1))]
        if not self.main:
            return trainer.checkpoint_path
        history = self.previous + self.history
        path = save_outputs(trainer, run_log, history, status)
        if history:
            plot_losses_file(history, self.out / "loss_curves.png")
        if self.validation is not None and self.validation.curve:
            self.validation.plot(self.out / "val_miou.png")
        return path

    def _fail(self, exc: BaseException) -> None:
        """After an error: say what is kept or saved, in the error's one line (raises it, reworded, or returns)."""
        from deal_ros.training.distributed import PeerLostError

        hold_stop_signals()  # ending anyway: a signal (torchrun's SIGTERM) must not cut the save below short
        self.bar.close()
        self.feeder.stop()
        trainer, history = self.trainer, self.previous + self.history
        if isinstance(exc, NoFramesError):
            raise NoFramesError(f"{exc} in {', '.join(self.args.bags)} ({skips_line(self.read_stats)})") from None
        if isinstance(exc, LossDivergedError):  # nothing worth saving: keep the last good checkpoint
            kept = checkpoint_step(trainer.checkpoint_path)
            where = f"{trainer.checkpoint_path} (step {kept}) is kept" if kept is not None else "nothing was saved"
            logged = log_divergence(self.run_log, history) if self.main else "rank 0 writes the log"
            raise LossDivergedError(f"{exc}; {where}; {logged}") from None
        if not self.main or trainer.step <= self.start_step or isinstance(exc, SaveError):
            return
        try:
            path = save_outputs(trainer, self.run_log, history, "failed")
        except DivergedError:
            raise
        except SaveError as save_exc:
            raise SaveError(f"{one_line(exc)}; and {save_exc}") from None
        saved = f"the {trainer.step - self.start_step} step(s) trained so far are saved in {path}"
        if isinstance(exc, PeerLostError):  # the one line of a job that lost a rank
            raise PeerLostError(f"{exc}; {saved}") from None
        LOG.warning("%s", saved)

    def _summary(self, path: Path) -> None:
        from deal_ros.labels.class_groups import describe_group

        trainer, feeder, job = self.trainer, self.feeder, self.job
        wall = time.perf_counter() - self.start
        steps = trainer.step - self.start_step
        reading = "all frames read" if feeder.done.is_set() and feeder.error is None else "reading stopped at --steps"
        print(f"trained {steps} step(s) to step {trainer.step} in {wall:.1f} s ({steps / wall:.2f} steps/s); "
              f"{feeder.frames_added} frame(s) buffered at {feeder.frames_per_second:.1f} frames/s ({reading})")
        if job is not None:
            print(f"{job.world_size} processes ({job.backend}), batch {trainer.batch_size} each; frames per rank: "
                  f"{self.run_log.frames_per_rank}; weights identical on all ranks: {self.run_log.weights_identical}")
        print(self.read_stats.summary())
        print(self._trust_line())
        for group in trainer.indistinct_classes():  # the tags cannot tell these apart: say so, once per group
            print(f"warning: {describe_group(group, trainer.cfg.pseudo_label.merge_indistinct)}")
        curves = self.out / "loss_curves.png"
        print(f"checkpoint: {path}\nlog: {self.out / 'train_log.json'}"
              + (f"\nloss curves: {curves}" if curves.exists() else ""))
