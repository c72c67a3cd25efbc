"""What `deal-ros train` writes: the checkpoint and train_log.json together, atomically, and the loss curves.

A save that keeps failing goes to a rescue folder that the error names; weights that diverged are never
saved over a good checkpoint; an unreadable old log is moved aside, never deleted.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deal_ros.cli import UserError
from deal_ros.cli.figures import write_figure
from deal_ros.config import DealRosConfig
from deal_ros.errors import one_line

if TYPE_CHECKING:
    from deal_ros.cli.feeding import FrameFeeder
    from deal_ros.cli.validation import Validation

LOG = logging.getLogger("deal_ros.train")

class SaveError(UserError):
    """The trained state could not be saved where asked: it went to a rescue folder, or training diverged."""


class DivergedError(SaveError):
    """The weights are NaN/inf: not saved (the previous checkpoint is kept); the message says all of it."""


class RunLog:
    """train_log.json of one run: what was read, the config, the loss history and the checkpoint's step."""

    def __init__(self, out: Path, args: argparse.Namespace, cfg: DealRosConfig, read_stats: Any, feeder: FrameFeeder,
                 start_step: int, start_time: float) -> None:
        self.out, self.args, self.cfg, self.read_stats, self.feeder = out, args, cfg, read_stats, feeder
        self.start_step, self.start_time = start_step, start_time
        self.validation: Validation | None = None
        self.world_size = 1
        """Processes of the torchrun job (1 without torchrun)."""
        self.frames_per_rank: list[int | None] | None = None
        """Frames each rank buffered (its share), None = this process's count only."""
        self.weights_identical: bool | None = None
        """Whether all ranks ended with bit-identical weights (checked at the end of a torchrun job)."""

    def text(self, history: list[dict[str, Any]], status: str, checkpoint_step: int | None) -> str:
        read_stats, feeder = self.read_stats, self.feeder
        log = {
            "status": status,
            "bags": list(self.args.bags),
            "steps": history[-1]["step"] if history else self.start_step,
            "checkpoint_step": checkpoint_step,
            "resumed_from_step": self.start_step,
            "wall_time_s": round(time.perf_counter() - self.start_time, 3),
            "frames_buffered": feeder.frames_added,
            "world_size": self.world_size,
            "frames_per_rank": self.frames_per_rank or [feeder.frames_added],
            "weights_identical_across_ranks": self.weights_identical,
            "frames_per_second": round(feeder.frames_per_second, 2),
            "read": {"frames": read_stats.frames, "skipped": dict(read_stats.skipped),
                     "examples": read_stats.examples, "warnings": read_stats.warnings,
                     "messages": dict(read_stats.messages)},
            "config": self.cfg.to_dict(),
            "history": history,
        }
        if self.validation is not None:
            log["validation"] = {"bag": self.args.val_bag, "frames": len(self.validation.frames),
                                 "curve": self.validation.curve}
        return json.dumps(log, indent=1)


def read_history(path: Path, step: int) -> list[dict[str, Any]]:
    """The loss history of train_log.json up to `step` (the resumed checkpoint's); [] when there is none.

    An unreadable log (cut off by a crash of an older version, edited by hand) is moved aside to
    NAME.unreadable, never deleted, and training continues from the checkpoint, which is what counts.
    """
    if not path.exists():
        return []
    try:
        history = json.loads(path.read_text())["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) and "step" in h for h in history):
            raise ValueError("'history' is not a list of steps")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        LOG.warning("%s is unreadable (%s): moved to %s; the loss history starts again at step %d",
                    path, one_line(exc, 200), aside, step)
        return []
    return [h for h in history if h["step"] <= step]


def save_outputs(trainer: Any, run_log: RunLog, history: list[dict[str, Any]], status: str) -> Path:
    """Checkpoint and train_log.json, together and atomically, into --out; returns the checkpoint's path.

    A write that keeps failing (disk full, folder gone read-only) puts both into a rescue folder and
    raises SaveError naming it; weights that are NaN/inf are refused (the old checkpoint is kept) and
    the log says 'diverged'.
    """
    from deal_ros.storage.checkpoint import CHECKPOINT_NAME, NonFiniteWeightsError
    from deal_ros.storage.files import SAVE_ATTEMPTS, atomic_write_text, write_or_rescue

    out = run_log.out
    step = trainer.step
    writers = {CHECKPOINT_NAME: trainer.save,
               "train_log.json": lambda p: atomic_write_text(p, run_log.text(history, status, step))}
    try:
        written = write_or_rescue(out, writers)
    except NonFiniteWeightsError as exc:
        raise DivergedError(f"{exc}; {log_divergence(run_log, history)}; "
                            f"lower train.lr (now {trainer.cfg.train.lr:g})") from None
    except OSError as exc:  # every folder failed
        raise SaveError(f"the {step - run_log.start_step} trained step(s) could not be saved: "
                        f"{one_line(exc)}") from None
    path = written.folder / CHECKPOINT_NAME
    if written.rescued:
        raise SaveError(f"cannot save to {out}: {written.failure} (tried {SAVE_ATTEMPTS} times); the checkpoint "
                        f"of step {step} ({step - run_log.start_step} step(s) trained in this run) and its log "
                        f"were saved to {path} instead: continue with --resume --out {written.folder}, or copy "
                        f"them back once {out} has room")
    return path


def log_divergence(run_log: RunLog, history: list[dict[str, Any]]) -> str:
    """Write train_log.json with status 'diverged' beside the kept checkpoint; returns what the user should know."""
    from deal_ros.storage.checkpoint import CHECKPOINT_NAME
    from deal_ros.storage.files import atomic_write_text, write_or_rescue

    kept = checkpoint_step(run_log.out / CHECKPOINT_NAME)
    try:
        written = write_or_rescue(run_log.out, {"train_log.json": lambda p: atomic_write_text(
            p, run_log.text(history, "diverged", kept))})
    except OSError as exc:
        return f"the log could not be written ({one_line(exc, 200)})"
    return f"{written.folder / 'train_log.json'} says 'diverged'"


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at `path`, None when there is none (or it is unreadable)."""
    from deal_ros.storage.checkpoint import CheckpointError, read_manifest

    try:
        return int(read_manifest(path)["step"]) if path.is_file() else None
    except (CheckpointError, KeyError, ValueError):
        return None


def plot_losses_file(history: list[dict[str, Any]], path: Path) -> None:
    """loss_curves.png, atomically (the log holds the numbers)."""
    write_figure(path, lambda plots: plots.plot_losses({"train": history}, path))
