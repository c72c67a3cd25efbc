"""The online trainer: frames in, CAM network trained on the objective of deal_ros.training.objective.

Used alike by the ROS trainer node (frames from a camera, steps in a worker thread), the command-line
tool (frames from a bag) and the demo (built-in scenes). Thread-safe: `add_frame` may be called from
one thread while another calls `train_step`; `model_lock` guards only the optimiser update (and
reset / resume / save), so `weight_snapshot` hands an in-process segmenter consistent weights without
waiting for a step, and `control` can stop a step in flight between layers (deal_ros.compute.live).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deal_ros.compute.device import describe_device, resolve_device
from deal_ros.compute.live import StepControl, TrainingInterrupted, WeightSnapshot, snapshot_state
from deal_ros.config import ConfigError, DealRosConfig
from deal_ros.errors import FrameError, one_line
from deal_ros.frames.augment import augment_batch
from deal_ros.frames.buffer import FrameBuffer, StoredFrame
from deal_ros.frames.checks import check_depth
from deal_ros.frames.tags import tags_to_vector
from deal_ros.labels.class_groups import TagContrast, contrast_from_extra
from deal_ros.labels.part_names import PartBank
from deal_ros.losses.structure import StructureLosses
from deal_ros.models import CAMNet, build_cam_net
from deal_ros.storage.checkpoint import (
    Checkpoint,
    CheckpointError,
    any_tensor_diverged,
    checkpoint_file,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from deal_ros.training.objective import Objective
from deal_ros.training.optimizer import apply_settings, make_optimizer, optimizer_changes
from deal_ros.training.trust import TrustTracker

if TYPE_CHECKING:
    from deal_ros.training.distributed import GradientSync

LOG = logging.getLogger(__name__)

SAVE_LOCK_TIMEOUT_S = 60.0
"""The longest a save waits for the model lock (held for moments by an update, a snapshot or another save)."""


DIFFUSE_COVER = 0.5
"""A class whose pseudo-label covers more than this fraction of the frames it is tagged in, on average, is
recognised from its context (diffuse CAM): its labels are not object masks."""
_COVER_MOMENTUM = 0.9


@dataclass
class StepStats:
    """What one training step did; published as training health, so a user sees a diverging or stalled run.

    loss is the objective's total, loss_<name> its terms unweighted (deal_ros.training.objective).
    """

    step: int
    loss: float
    loss_cls: float
    loss_deal: float
    loss_seg: float
    deal_weight: float
    pseudo_coverage: float
    """Fraction of pixels with a confident pseudo-label (not 255)."""
    batch_size: int
    step_time_s: float
    loss_isl: float = 0.0
    """Importance-sampling loss (already mixed into loss_cls as (1 - w) L_gap + w L_isl)."""
    loss_fsl: float = 0.0
    loss_smooth: float = 0.0
    loss_boundary: float = 0.0
    loss_ssc: float = 0.0
    loss_recon: float = 0.0
    """Structure-loss terms, unweighted (0.0 when disabled or not yet active)."""
    loss_support: float = 0.0
    """Support-plane loss, unweighted (0.0 when loss.support_weight is 0)."""
    class_cover: dict[str, float] = field(default_factory=dict)
    """Per class, a running mean of the fraction of the frame its pseudo-label covers in the frames tagged
    with it (classes not seen yet are absent)."""
    diffuse_classes: list[str] = field(default_factory=list)
    """Classes whose class_cover exceeds DIFFUSE_COVER: recognised from the whole frame, not the object."""
    head_agreement: float | None = None
    """This batch: mIoU of the segmentation head's argmax against the pseudo-labels (None without confident ones)."""
    head_pixel_agreement: float | None = None
    """This batch: share of the confidently labelled pixels where the head's argmax is the pseudo-label."""
    trust_agreement: float | None = None
    """head_agreement averaged over the last trust.window_steps steps with pseudo-labels (deal_ros.training.trust)."""
    masks_trusted: bool = False
    """The trust rule's verdict after this step: the segmentation head's masks are trustworthy."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_to_tensors(frames: Sequence[StoredFrame], device: torch.device,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored frames -> rgb (B, 3, H, W) float 0..255, depth_m (B, 1, H, W), tags (B, K) float."""
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames])).to(device).permute(0, 3, 1, 2).float()
    depth_m = torch.from_numpy(np.stack([f.depth_m for f in frames])).to(device)
    tags = torch.from_numpy(np.stack([f.tags for f in frames]).astype(np.float32)).to(device)
    return rgb, depth_m[:, None], tags


class OnlineTrainer:
    """Owns the model, the frame buffer, the optimizer and the step count."""

    def __init__(self, cfg: DealRosConfig, device: str | torch.device | None = None) -> None:
        self.device = resolve_device(cfg.train.device) if device is None else torch.device(device)
        self.cfg = cfg = cfg.for_device(self.device.type)  # checkpoints record the size trained at
        torch.manual_seed(cfg.train.seed)
        self.model: CAMNet = build_cam_net(cfg.model, cfg.num_classes).to(self.device)
        self.model.train()
        self.buffer = FrameBuffer(cfg.buffer, cfg.num_classes, (cfg.model.input_height, cfg.model.input_width))
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.objective = Objective(cfg, self.model, self.device)
        self.aux_optimizer = self._make_aux_optimizer()
        self.step = 0
        self.batch_size = cfg.train.batch_size
        self.skipped_steps = 0
        self.resume_changes: list[str] = []
        self.interrupted_steps = 0
        self.model_lock = threading.RLock()
        """Held for optimiser updates, reset, resume, save and weight snapshots; never for a whole step."""
        self._step_lock = threading.RLock()
        """Held by the thread in train_step: reset / resume interrupt that step and wait for it to leave."""
        self.control = StepControl()
        """Stops a step in flight between layers (shutdown, pause) and lets an in-process segmenter go first."""
        self.control.attach(self.model)
        self.reseed_data(cfg.train.seed)
        self.trust = TrustTracker()
        """Whether the head's masks are trustworthy yet; updated with every step, saved in checkpoints."""
        self.contrast = TagContrast(cfg.num_classes)
        """The distinct tag patterns of the frames added: the classes the tags cannot tell apart (saved in
        checkpoints)."""
        self.part_bank = PartBank(cfg.num_classes)
        """The looks of the depth parts of the frames trained on, per tag pattern (pseudo_label.part_contrast);
        a segmenter sharing the model may share it."""
        self.class_cover: dict[str, float] = {}
        """Running mean per class of the frame fraction its pseudo-label covers where tagged (StepStats)."""
        self._diffuse_warned_step: dict[str, int] = {}
        self.sync: GradientSync | None = None
        """Set by deal_ros.training.distributed.attach for one rank of a multi-process job (gradients averaged)."""
        LOG.info("trainer on %s, %s backbone, %d classes", describe_device(self.device),
                 cfg.model.backbone, cfg.num_classes)

    def reseed_data(self, seed: int) -> None:
        """New seed for batch sampling and augmentation only (not the weights): each rank of a job draws its own."""
        self._rng = np.random.default_rng(seed)
        self._aug_generator = torch.Generator().manual_seed(seed)

    @property
    def _amp(self) -> bool:
        return self.cfg.train.amp and self.device.type == "cuda"

    @property
    def structure(self) -> StructureLosses:
        """The objective's structure losses (their trainable modules are the auxiliary optimizer's)."""
        return self.objective.structure

    def _make_aux_optimizer(self) -> torch.optim.Optimizer | None:
        """Optimizer of the structure losses' own modules (heads' lr and settings); None when there are none."""
        params = self.objective.trainable_parameters()
        return make_optimizer(self.cfg.train, params) if params else None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        train = self.cfg.train
        return make_optimizer(train, self.model.param_groups(train.lr, train.backbone_lr_scale))

    # -- frames -----------------------------------------------------------------------------------
    def add_frame(self, rgb: np.ndarray, depth_m: np.ndarray, tags: Sequence[str]) -> None:
        """Buffer one frame: rgb (H, W, 3) uint8, depth_m (H, W) metres aligned to rgb, tags = class names."""
        if rgb.shape[:2] != depth_m.shape[:2]:
            raise FrameError(f"RGB {rgb.shape[:2]} and depth {depth_m.shape[:2]} sizes differ; "
                             "depth must be aligned to colour (e.g. aligned_depth_to_color)")
        check_depth(depth_m, "frame refused")  # no valid or constant depth: DEAL would be 0, nothing learnt
        vector = tags_to_vector(tags, self.cfg.classes)
        self.buffer.add(rgb, depth_m, vector)
        self.contrast.update(vector)

    def note_tags(self, tags: Sequence[str]) -> None:
        """The tags of a frame that another rank of the job buffers, so that every rank finds the same class
        groups (indistinct_classes)."""
        self.contrast.update(tags_to_vector(tags, self.cfg.classes))

    def indistinct_classes(self) -> list[list[str]]:
        """The groups of classes tagged in exactly the same frames so far, by name (deal_ros.labels.class_groups)."""
        return [[self.cfg.classes[k] for k in group] for group in self.contrast.groups()]

    # -- training ---------------------------------------------------------------------------------
    def deal_weight(self, step: int | None = None) -> float:
        """lambda at `step` (default: now), the objective's DEAL warm-up."""
        return self.objective.deal_weight(self.step if step is None else step)

    def train_step(self) -> StepStats | None:
        """One optimisation step on a sampled batch; None if the buffer is empty or the step was skipped."""
        if len(self.buffer) == 0:
            return None
        start = time.perf_counter()
        frames = self.buffer.sample(self.batch_size, self._rng)
        try:
            with self._step_lock, self.control.stepping():
                stats = self._step(frames)
        except TrainingInterrupted:
            self.optimizer.zero_grad(set_to_none=True)
            self.interrupted_steps += 1
            return None
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if self.batch_size == 1:
                raise
            self.batch_size = max(1, self.batch_size // 2)
            LOG.warning("CUDA out of memory: batch size halved to %d", self.batch_size)
            return None
        if stats is None:
            self.skipped_steps += 1
            return None
        stats.step_time_s = time.perf_counter() - start
        return stats

    def _step(self, frames: Sequence[StoredFrame]) -> StepStats | None:
        cfg = self.cfg
        rgb, depth_m, tags = batch_to_tensors(frames, self.device)
        rgb, depth_m, _ = augment_batch(rgb, depth_m, cfg.augment, self._aug_generator)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self._amp):
            if self.sync is not None:
                self.sync.before_forward()
            out = self.model(self.model.normalize_input(rgb))
        reps = self.contrast.merge_map() if cfg.pseudo_label.merge_indistinct else None
        value = self.objective(out, rgb, depth_m, tags, self.step,
                               None if reps is None else torch.from_numpy(reps).to(self.device), self.part_bank)
        if value.pseudo_labels is not None:
            self._update_class_cover(value.pseudo_labels, tags)
        loss = value.total
        finite = bool(torch.isfinite(loss))
        if self.sync is not None:
            finite = self.sync.agree(finite)  # all ranks skip together: a collective must never miss one
        if not finite:
            LOG.warning("non-finite loss at step %d (%s): step skipped", self.step, value.describe())
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.sync is not None:
            self.sync.after_backward()
        if cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            # The segmentation head is clipped on its own: its early, large CE gradients must not shrink
            # the CAM network's step through a shared norm (measured: that alone cost pseudo-label mIoU).
            seg_params = {id(p) for p in self.model.seg_head.parameters()}
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if id(p) not in seg_params],
                                           cfg.train.grad_clip)
            torch.nn.utils.clip_grad_norm_(self.model.seg_head.parameters(), cfg.train.grad_clip)
            if self.aux_optimizer is not None:
                self.scaler.unscale_(self.aux_optimizer)
                torch.nn.utils.clip_grad_norm_(self.objective.trainable_parameters(), cfg.train.grad_clip)
        with self.model_lock:  # the update only: save and snapshots wait for this, never for a whole step
            self.scaler.step(self.optimizer)
            if self.aux_optimizer is not None:
                self.scaler.step(self.aux_optimizer)
            self.scaler.update()
            self.step += 1
            agreement = value.agreement
            self.trust.update(self.step, None if agreement is None else agreement.miou, cfg.trust)
        return StepStats(step=self.step, loss=float(loss.detach()), deal_weight=value.deal_weight,
                         pseudo_coverage=value.pseudo_coverage, batch_size=len(frames), step_time_s=0.0,
                         class_cover=dict(self.class_cover), diffuse_classes=self.diffuse_classes(),
                         head_agreement=None if agreement is None else agreement.miou,
                         head_pixel_agreement=None if agreement is None else agreement.pixel_accuracy,
                         trust_agreement=self.trust.agreement, masks_trusted=self.trust.trusted,
                         **value.term_stats())

    def _update_class_cover(self, labels: torch.Tensor, tags: torch.Tensor) -> None:
        """labels (B, h, w) pseudo-labels, tags (B, K): update the running per-class cover; warn (every 100 steps
        at most, per class) about classes that cover most of the frames they are tagged in."""
        fractions = torch.stack([(labels == k + 1).float().mean(dim=(1, 2)) for k in range(tags.shape[1])], 1)
        tagged = tags > 0
        counts = tagged.sum(0)
        means = (fractions * tagged).sum(0) / counts.clamp_min(1)
        for k in torch.nonzero(counts).flatten().tolist():
            name = self.cfg.classes[k]
            previous = self.class_cover.get(name)
            value = float(means[k])
            self.class_cover[name] = value if previous is None else _COVER_MOMENTUM * previous + (
                1 - _COVER_MOMENTUM) * value
        for name in self.diffuse_classes():
            if self.step - self._diffuse_warned_step.get(name, -10**9) >= 100:
                self._diffuse_warned_step[name] = self.step
                LOG.warning("class %r: its pseudo-label covers %.0f %% of the frames it is tagged in (step %d): the "
                            "classifier recognises it from the whole frame, so its labels are not object masks "
                            "(more varied backgrounds, pseudo_label.support_plane: true, or check its tags)",
                            name, 100 * self.class_cover[name], self.step)

    def diffuse_classes(self) -> list[str]:
        """Classes whose running pseudo-label cover exceeds DIFFUSE_COVER (the diffuse-CAM signature)."""
        return [name for name, cover in self.class_cover.items() if cover > DIFFUSE_COVER]

    # -- run-time changes ---------------------------------------------------------------------------
    def update_config(self, overrides: dict[str, Any]) -> None:
        """Apply run-time-safe changes (thresholds, lambda, rates; not the architecture or classes)."""
        new = self.cfg.updated(overrides)
        if new.architecture_hash() != self.cfg.architecture_hash():
            raise ConfigError("classes and model architecture cannot change at run time; restart with a new config")
        with self.model_lock:
            self.cfg = new
            objective = Objective(new, self.model, self.device, previous=self.objective)
            rebuilt = {id(p) for p in objective.trainable_parameters()} != {
                id(p) for p in self.objective.trainable_parameters()}
            self.objective = objective
            if rebuilt:
                self.aux_optimizer = self._make_aux_optimizer()
            elif self.aux_optimizer is not None:
                apply_settings(self.aux_optimizer, new.train)
            apply_settings(self.optimizer, new.train)

    def reset(self) -> None:
        """Forget the frames and start the model over (fresh weights, optimizer and step count)."""
        with self._exclusive():
            torch.manual_seed(self.cfg.train.seed)
            fresh = build_cam_net(self.cfg.model, self.cfg.num_classes).to(self.device)
            self.model.load_state_dict(fresh.state_dict())
            self.optimizer = self._make_optimizer()
            self.step = 0
            self.batch_size = self.cfg.train.batch_size
            self.trust.reset()
        self.buffer.clear()
        self.contrast.clear()
        self.part_bank.clear()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """For replacing the weights: stop a step in flight at its next layer (in-place changes under a running
        backward would break it) and hold off new ones meanwhile."""
        self.control.interrupt("reset")
        try:
            with self._step_lock, self.model_lock:
                yield
        finally:
            self.control.resume("reset")

    def weight_snapshot(self) -> WeightSnapshot:
        """The current weights, step, trust verdict and indistinct classes (as representatives, for the segmenter's
        pseudo-labels), copied between optimiser updates (for an in-process segmenter)."""
        reps = self.contrast.merge_map()
        with self.model_lock:
            return snapshot_state(self.model, self.step, self.trust.trusted, reps)

    # -- checkpoints --------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return checkpoint_file(self.cfg.checkpoint.directory)

    def save(self, path: str | Path | None = None) -> Path:
        """Atomically write the model, optimizer and step (default: <checkpoint.directory>/model.safetensors).

        Waits for the weights (an optimiser update, a snapshot or another save holds them for moments) at most
        SAVE_LOCK_TIMEOUT_S, then raises CheckpointError: a save never hangs on a stuck holder.
        """
        if not self.model_lock.acquire(timeout=SAVE_LOCK_TIMEOUT_S):
            raise CheckpointError(f"could not save at step {self.step}: the weights stayed locked for "
                                  f"{SAVE_LOCK_TIMEOUT_S:g} s (a training step or another save is stuck); "
                                  "the previous checkpoint is untouched")
        try:
            return save_checkpoint(path or self.checkpoint_path, self.model, self.cfg, self.step, self.optimizer,
                                   extra={"trust": self.trust.state_dict(), "class_contrast": self.contrast.state()})
        finally:
            self.model_lock.release()

    def resume(self, path: str | Path | None = None) -> Checkpoint:
        """Continue from a checkpoint: weights, optimizer state and step count.

        The optimizer's hyper-parameters come from this trainer's config, not from the saved state, so
        that a new train.lr (etc.) given on resume takes effect; `resume_changes` lists what differs from
        the checkpoint's config (also logged).
        """
        path = Path(path or self.checkpoint_path)
        ckpt = load_checkpoint(path, expected=self.cfg)
        try:
            saved_contrast = contrast_from_extra(ckpt.extra, self.cfg.num_classes)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
        with self._exclusive():
            load_model_state(self.model, ckpt.model_state, path)
            kind = type(self.optimizer).__name__
            changed_kind = ckpt.optimizer_type not in (None, kind)
            if ckpt.optimizer_state is not None and not changed_kind:
                try:
                    self.optimizer.load_state_dict(ckpt.optimizer_state)
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"checkpoint {path}: the optimizer state does not fit the model "
                                          f"({one_line(exc, 200)})") from None
            apply_settings(self.optimizer, self.cfg.train)
            self.step = ckpt.step
            self.trust.load_state_dict(ckpt.extra.get("trust") or {})
            self.contrast.update(saved_contrast.presence())  # the frames seen before, and any added already
        self.resume_changes = optimizer_changes(ckpt.config.train, self.cfg.train)
        if changed_kind:
            self.resume_changes.insert(0, f"optimizer {ckpt.optimizer_type} -> {kind} (its state starts afresh)")
        LOG.info("resumed from %s at step %d%s", path, self.step,
                 f"; applied to the optimizer: {', '.join(self.resume_changes)}" if self.resume_changes else "")
        return ckpt

    def weights_diverged(self) -> bool:
        """True when training diverged (weights NaN, inf or absurdly large): such weights are never saved."""
        with self.model_lock:
            return any_tensor_diverged(self.model.state_dict().values())
