"""Inference: one camera frame in, mask / confidence / pseudo-label out, at camera resolution.

The network runs at the configured input size; results are upsampled back. Pre- and
post-processing run on the model's device (resize, softmax, argmax), and only uint8 / float32
images come back to the host. Can share a model (and its lock) with an in-process trainer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deal_ros.checkpoint import CheckpointError, load_checkpoint
from deal_ros.config import DealConfig
from deal_ros.device import resolve_device
from deal_ros.models import CAMNet, build_cam_net
from deal_ros.pseudo_labels import make_pseudo_labels
from deal_ros.trainer import tags_to_vector


@dataclass
class SegmentationResult:
    mask: np.ndarray
    """(H, W) uint8 class ids, 0 = background."""
    confidence: np.ndarray
    """(H, W) float32 softmax probability of the chosen class."""
    pseudo_label: np.ndarray | None
    """(H, W) uint8 from CAMs + tags, 255 = ignore; None when no tags were given."""


class Segmenter:
    """Runs a CAM network on single frames (batch of one); `load` hot-swaps weights from a checkpoint."""

    def __init__(self, cfg: DealConfig, model: CAMNet | None = None, device: str | torch.device | None = None,
                 model_lock: threading.RLock | None = None) -> None:
        self.cfg = cfg
        if model is None:
            self.device = resolve_device(cfg.train.device) if device is None else torch.device(device)
            model = build_cam_net(cfg.model, cfg.num_classes).to(self.device)
        else:
            self.device = next(model.parameters()).device
        self.model = model
        self.model_lock = model_lock
        self.step = -1
        """Training step of the loaded weights (-1 = initial weights)."""

    def load(self, path: str) -> int:
        """Load weights from a checkpoint written by the trainer; returns its step. Refuses other classes."""
        ckpt = load_checkpoint(path, expected=self.cfg, device=self.device)
        with self._locked():
            try:
                self.model.load_state_dict(ckpt.model_state)
            except RuntimeError as exc:
                raise CheckpointError(f"checkpoint {path} does not fit the model: {exc}") from None
        self.step = ckpt.step
        return ckpt.step

    def _locked(self) -> contextlib.AbstractContextManager:
        return self.model_lock if self.model_lock is not None else contextlib.nullcontext()

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, depth_m: np.ndarray | None = None,
                 tags: Sequence[str] | None = None) -> SegmentationResult:
        """rgb (H, W, 3) uint8; depth_m (H, W) metres aligned to rgb (for the pseudo-label refinement)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if depth_m is not None and depth_m.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"depth {depth_m.shape[:2]} and RGB {rgb.shape[:2]} sizes differ")
        height, width = rgb.shape[:2]
        net_size = (self.cfg.model.input_height, self.cfg.model.input_width)
        frame = torch.from_numpy(rgb).to(self.device, non_blocking=True).permute(2, 0, 1)[None].float()
        x = F.interpolate(frame, size=net_size, mode="bilinear", align_corners=False, antialias=True)
        with self._locked():
            was_training = self.model.training
            self.model.eval()
            try:
                out = self.model(self.model.normalize_input(x))
            finally:
                self.model.train(was_training)
        probs = torch.softmax(F.interpolate(out.seg_logits.float(), size=(height, width), mode="bilinear",
                                            align_corners=False), dim=1)
        confidence, mask = probs.max(dim=1)
        pseudo = None
        if tags is not None:
            tag_vec = torch.from_numpy(tags_to_vector(tags, self.cfg.classes)).to(self.device)[None].float()
            depth = None
            if depth_m is not None:
                depth = torch.from_numpy(np.ascontiguousarray(depth_m, dtype=np.float32)).to(self.device)[None, None]
            labels, _ = make_pseudo_labels(out.cam_logits, tag_vec, (height, width), self.cfg.pseudo_label,
                                           frame / 255.0, depth)
            pseudo = labels[0].to(torch.uint8).cpu().numpy()
        return SegmentationResult(mask=mask[0].to(torch.uint8).cpu().numpy(),
                                  confidence=confidence[0].cpu().numpy().astype(np.float32, copy=False),
                                  pseudo_label=pseudo)
