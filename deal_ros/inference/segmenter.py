"""Inference: one camera frame in, mask / confidence / pseudo-label out, at camera resolution.

The network runs at the configured input size; results are upsampled back. The frame is resized
on the host (uint8, area-averaged) before upload; post-processing runs on the model's device
(upsample, argmax, confidence) and only uint8 / float32 images come back to the host.
Beside an in-process trainer it runs its own copy of the network, swapping in the trainer's weight
snapshots between frames (deal_ros.compute.live), so a frame never waits for a training step; on CUDA it
works on its own stream.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from deal_ros.compute.device import resolve_device
from deal_ros.compute.live import StepControl, WeightHandoff
from deal_ros.config import DealRosConfig
from deal_ros.errors import FrameError
from deal_ros.frames.checks import check_rgb
from deal_ros.frames.tags import tags_to_vector
from deal_ros.labels.class_groups import contrast_from_extra
from deal_ros.labels.part_names import PartBank
from deal_ros.labels.pseudo_labels import make_pseudo_labels, remember_frame_parts
from deal_ros.models import CAMNet, build_cam_net
from deal_ros.storage.checkpoint import CheckpointError, load_checkpoint, load_model_state
from deal_ros.training.trust import checkpoint_trusted

if TYPE_CHECKING:
    from deal_ros.training.trainer import OnlineTrainer


@dataclass
class SegmentationResult:
    mask: np.ndarray
    """(H, W) uint8 class ids, 0 = background."""
    confidence: np.ndarray
    """(H, W) float32 softmax probability of the chosen class."""
    pseudo_label: np.ndarray | None
    """(H, W) uint8 from CAMs + tags, 255 = ignore; None when no tags were given."""
    timing_s: dict[str, float] = field(default_factory=dict)
    """Wall time of 'swap' (new weights), 'preprocess', 'forward' and 'postprocess' (on CUDA, queued work lands
    in the next stage)."""


class Segmenter:
    """Runs a CAM network on single frames (batch of one); `load` hot-swaps weights from a checkpoint.

    With `weights` (an in-process trainer's handoff), `model` is this segmenter's own copy and each
    frame first swaps in the newest snapshot; with `control` (the trainer's StepControl), each frame
    is announced so that a training step on the CPU can step aside.
    """

    def __init__(self, cfg: DealRosConfig, model: CAMNet | None = None, device: str | torch.device | None = None,
                 model_lock: threading.RLock | None = None, weights: WeightHandoff | None = None,
                 control: StepControl | None = None) -> None:
        own = model is None
        if model is None:
            self.device = resolve_device(cfg.train.device) if device is None else torch.device(device)
            model = build_cam_net(cfg.model, cfg.num_classes).to(self.device).eval()
        else:
            self.device = next(model.parameters()).device
        self.cfg = cfg
        self.model = model
        self.model_lock = model_lock
        self.weights = weights
        self.control = control
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" and weights is not None else None
        self.step = -1
        """Training step of the weights in use (-1 = initial weights)."""
        self.trusted = False
        """Whether the trainer trusted the masks of the weights in use (from the snapshot or the checkpoint)."""
        self.representatives: np.ndarray | None = None
        """(K,) int64: the classes the trainer's tags could not tell apart, each as its group's first member (from
        the snapshot or the checkpoint, or set by whoever shares the trainer's model; None: none). Pseudo-labels
        merge them with pseudo_label.merge_indistinct."""
        self.part_bank: PartBank | None = None
        """The looks of the depth parts of tagged frames (pseudo_label.part_contrast): the trainer's when it shares
        the model, one that `deal-ros label` fills from the frames it labels; None: the CAM names every part."""
        self.swaps = 0
        """Weight snapshots swapped in from `weights`."""
        self._halt = StepControl()
        if own:  # a network of our own: `interrupt` can stop a frame in flight between layers
            self._halt.attach(self.model)

    @property
    def cfg(self) -> DealRosConfig:
        """The configuration in use, its network input size the one for this segmenter's device."""
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: DealRosConfig) -> None:
        self._cfg = cfg.for_device(self.device.type)

    def load(self, path: str) -> int:
        """Load weights from a checkpoint written by the trainer; returns its step. Refuses other classes."""
        ckpt = load_checkpoint(path, expected=self.cfg, device=self.device)
        try:
            contrast = contrast_from_extra(ckpt.extra, self.cfg.num_classes)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
        with self._locked():
            load_model_state(self.model, ckpt.model_state, path)  # a mismatch: one short line naming it
        self.step = ckpt.step
        self.trusted = checkpoint_trusted(ckpt.extra)
        self.representatives = contrast.merge_map()
        return ckpt.step

    def _locked(self) -> contextlib.AbstractContextManager:
        return self.model_lock if self.model_lock is not None else contextlib.nullcontext()

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def interrupt(self) -> None:
        """Shutdown: the frame in flight (and any later one) raises TrainingInterrupted at its next layer, so the
        thread can be joined at once (a process must not exit while a thread is inside a torch op)."""
        self._halt.interrupt("stop")

    def refresh(self) -> bool:
        """Swap in the newest weight snapshot of `weights`, if any (a copy of ~15 MB for MobileNetV2)."""
        snapshot = self.weights.take() if self.weights is not None else None
        if snapshot is None:
            return False
        with self._locked(), self._on_stream():
            if snapshot.ready is not None:
                torch.cuda.current_stream(self.device).wait_event(snapshot.ready)
            self.model.load_state_dict(snapshot.state)
            if self._stream is not None:
                self._stream.synchronize()  # the trainer may free the snapshot as soon as we return
        self.step = snapshot.step
        self.trusted = snapshot.trusted
        self.representatives = snapshot.representatives
        self.swaps += 1
        return True

    def label_like(self, trainer: OnlineTrainer) -> None:
        """Make pseudo-labels as `trainer` (sharing its model) makes them now: its merge of indistinct classes and
        its bank of part looks (every training frame must be in already)."""
        self.representatives = trainer.contrast.merge_map()
        self.part_bank = trainer.part_bank

    @torch.no_grad()
    def remember(self, rgb: np.ndarray, depth_m: np.ndarray, tags: Sequence[str]) -> None:
        """Add a tagged frame's depth parts to part_bank (made on first use), as the pseudo-labels of a frame of this
        size find them: rgb (H, W, 3) uint8, depth_m (H, W) metres aligned to it, tags = class names."""
        if self.part_bank is None:
            self.part_bank = PartBank(self.cfg.num_classes)
        frame = torch.tensor(rgb).permute(2, 0, 1)[None].float() / 255.0  # a copy: bag frames are read-only
        depth = torch.tensor(depth_m, dtype=torch.float32)[None, None]
        tag_vec = torch.from_numpy(tags_to_vector(tags, self.cfg.classes))[None]
        remember_frame_parts(self.part_bank, frame, depth, tag_vec, self.cfg.pseudo_label)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, depth_m: np.ndarray | None = None,
                 tags: Sequence[str] | None = None) -> SegmentationResult:
        """rgb (H, W, 3) uint8; depth_m (H, W) metres aligned to rgb (for the pseudo-label refinement)."""
        check_rgb(rgb)
        if depth_m is not None and depth_m.shape[:2] != rgb.shape[:2]:
            raise FrameError(f"depth {depth_m.shape[:2]} and RGB {rgb.shape[:2]} sizes differ")
        start = time.perf_counter()
        self.refresh()
        swapped = time.perf_counter()
        announce = self.control.inference() if self.control is not None else contextlib.nullcontext()
        with announce, self._on_stream(), self._halt.stepping():
            result = self._segment(rgb, depth_m, tags)
        result.timing_s["swap"] = swapped - start
        return result

    def _segment(self, rgb: np.ndarray, depth_m: np.ndarray | None,
                 tags: Sequence[str] | None) -> SegmentationResult:
        start = time.perf_counter()
        height, width = rgb.shape[:2]
        net_height, net_width = self.cfg.model.input_height, self.cfg.model.input_width
        # Resize the uint8 frame on the host (SIMD, area-averaged = antialiased) and upload only that.
        small = cv2.resize(rgb, (net_width, net_height),
                           interpolation=cv2.INTER_AREA if height > net_height else cv2.INTER_LINEAR)
        x = torch.from_numpy(small).to(self.device, non_blocking=True).permute(2, 0, 1)[None].float()
        preprocessed = time.perf_counter()
        with self._locked():
            # A model shared with the trainer is in train mode: switch (BatchNorm!) for this forward only.
            was_training = self.model.training
            if was_training:
                self.model.eval()
            try:
                out = self.model(self.model.normalize_input(x))
            finally:
                if was_training:
                    self.model.train()
        forwarded = time.perf_counter()
        # Decide labels at the network input resolution (what the network sees), then upsample the small
        # uint8 mask (nearest) and confidence (linear) on the host: ~5x cheaper than at camera resolution.
        logits = F.interpolate(out.seg_logits.float(), size=(net_height, net_width), mode="bilinear",
                               align_corners=False)
        top, mask = logits.max(dim=1)
        confidence = 1.0 / torch.exp(logits - top[:, None]).sum(dim=1)  # softmax probability of the top class
        mask_np = mask[0].to(torch.uint8).cpu().numpy()
        confidence_np = confidence[0].cpu().numpy()
        if (height, width) != (net_height, net_width):
            mask_np = cv2.resize(mask_np, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
            confidence_np = cv2.resize(confidence_np, (width, height), interpolation=cv2.INTER_LINEAR)
        pseudo = None
        if tags is not None:
            tag_vec = torch.from_numpy(tags_to_vector(tags, self.cfg.classes)).to(self.device)[None].float()
            depth = None
            if depth_m is not None:
                depth = torch.from_numpy(np.ascontiguousarray(depth_m, dtype=np.float32)).to(self.device)[None, None]
            frame = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            reps = None
            if self.cfg.pseudo_label.merge_indistinct and self.representatives is not None:
                reps = torch.from_numpy(self.representatives)
            labels, _ = make_pseudo_labels(out.cam_logits, tag_vec, (height, width), self.cfg.pseudo_label,
                                           frame, depth, representatives=reps, part_bank=self.part_bank,
                                           add_to_bank=False)
            pseudo = labels[0].to(torch.uint8).cpu().numpy()
        timing = {"preprocess": preprocessed - start, "forward": forwarded - preprocessed,
                  "postprocess": time.perf_counter() - forwarded}
        return SegmentationResult(mask=mask_np, confidence=confidence_np.astype(np.float32, copy=False),
                                  pseudo_label=pseudo, timing_s=timing)
