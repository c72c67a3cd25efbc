"""Semantic boundary branch (structure-aware WSSS, Liu et al. 2021): training-time only.

A small head fuses the backbone's multi-level features (CAMOutput.features: strides 4, 8, final), each
reduced to one side map by a 1x1 conv, with Canny edges of the image (thresholds 10 / 100 on 8-bit grey;
optionally also of the depth) through a depthwise 1x1 conv followed by a channel sum (a learned weighted
sum), predicting boundary logits at stride 4. It is trained with class-balanced BCE against boundary
pseudo-labels made from the current pseudo-labels. Its prediction is the S of the smoothness loss with
source='learned'.

The branch is a separate nn.Module held by the trainer, not part of CAMNet: checkpoints, the segmenter
and run-time cost are unaffected. Its parameters train with the trainer's auxiliary optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.config import IGNORE_INDEX
from deal_ros.depth.maps import fill_holes, valid_depth
from deal_ros.losses.common import check_cam_and_tags, require, spatial_size, zero_loss


@torch.no_grad()
def canny_edges(image01: torch.Tensor, size: tuple[int, int], low: float = 10.0, high: float = 100.0) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] (C = 3: RGB -> grey; C = 1: as is) -> Canny edges (B, 1, *size) in {0, 1}.

    Canny runs at full resolution (OpenCV, CPU); the thin edges reach the smaller grid by max-pooling.
    """
    arrays = (image01.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    edges = []
    for arr in arrays:
        grey = cv2.cvtColor(np.ascontiguousarray(arr.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY) if arr.shape[0] == 3 \
            else arr[0]
        edges.append(cv2.Canny(np.ascontiguousarray(grey), low, high) > 0)
    out = torch.from_numpy(np.stack(edges)[:, None].astype(np.float32)).to(image01.device)
    return F.adaptive_max_pool2d(out, size) if tuple(out.shape[-2:]) != tuple(size) else out


@torch.no_grad()
def depth_for_canny(depth_m: torch.Tensor) -> torch.Tensor:
    """Depth (B, 1, H, W), 0/NaN = hole -> hole-filled log-depth min-max scaled to [0, 1] per image."""
    depth = torch.nan_to_num(depth_m.detach().float(), nan=0.0)
    valid = valid_depth(depth)
    filled = fill_holes(depth.abs(), valid, "row_far")
    z = torch.log(filled.clamp_min(1e-3))
    lo, hi = z.amin(dim=(-2, -1), keepdim=True), z.amax(dim=(-2, -1), keepdim=True)
    return (z - lo) / (hi - lo).clamp_min(1e-6)


@torch.no_grad()
def boundary_targets(labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels (B, H, W) (255 = ignore) -> (target (B, 1, *size) float {0, 1}, valid bool (B, 1, *size)).

    Positive: a confident pixel whose 3x3 neighbourhood holds another confident label. Negative: a pixel
    whose 3x3 neighbourhood is one confident label. Anything touching the ignore band is left out.
    """
    lab = labels[:, None].float()
    if tuple(lab.shape[-2:]) != tuple(size):
        lab = F.interpolate(lab, size=size, mode="nearest-exact")
    confident = lab != IGNORE_INDEX
    big = float(IGNORE_INDEX + 1)
    hi = F.max_pool2d(torch.where(confident, lab, torch.full_like(lab, -1.0)), 3, stride=1, padding=1)
    lo = -F.max_pool2d(-torch.where(confident, lab, torch.full_like(lab, big)), 3, stride=1, padding=1)
    all_confident = -F.max_pool2d(-confident.float(), 3, stride=1, padding=1) > 0
    positive = confident & (hi != lo)
    negative = all_confident & (hi == lo)
    return positive.float(), positive | negative


class BoundaryBranch(nn.Module):
    """features [(B, C_l, h_l, w_l)] + edge maps (B, E, h0, w0) -> boundary logits (B, 1, h0, w0) at stride 4."""

    def __init__(self, feature_channels: Sequence[int], num_edge_maps: int = 1) -> None:
        super().__init__()
        self.sides = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in feature_channels)
        n = len(feature_channels) + num_edge_maps
        self.fuse = nn.Conv2d(n, n, 1, groups=n)  # depthwise 1x1: one learned scale + bias per input map
        nn.init.constant_(self.fuse.weight, 1.0)
        assert self.fuse.bias is not None
        nn.init.zeros_(self.fuse.bias)

    def forward(self, features: Sequence[torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        size = spatial_size(edges)
        sides = [F.interpolate(side(f.float()), size=size, mode="bilinear", align_corners=False)
                 for side, f in zip(self.sides, features, strict=True)]
        return self.fuse(torch.cat([*sides, edges.to(sides[0])], dim=1)).sum(dim=1, keepdim=True)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """HED-style class-balanced BCE over valid pixels (boundaries are a few % of the pixels); 0 if none valid."""
    valid_f = valid.to(logits)
    n_pos = (target * valid_f).sum()
    n_all = valid_f.sum()
    if float(n_all) == 0:
        return logits.sum() * 0.0
    beta = (n_all - n_pos) / n_all  # weight of positives = fraction of negatives
    weight = torch.where(target > 0.5, beta, 1.0 - beta) * valid_f
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / n_all


class BoundaryLoss(nn.Module):
    """Owns a :class:`BoundaryBranch`; BCE against pseudo-label boundaries. Context: ``features``, ``rgb``,
    ``pseudo_labels`` (None: the loss is 0, the prediction is still made). After each call
    ``last_boundary`` holds the predicted probability map (B, 1, H/4, W/4), detached, for smoothness."""

    def __init__(self, feature_channels: Sequence[int], canny_low: float = 10.0, canny_high: float = 100.0,
                 depth_edges: bool = False, detach_features: bool = False) -> None:
        super().__init__()
        self.canny_low, self.canny_high = canny_low, canny_high
        self.depth_edges, self.detach_features = depth_edges, detach_features
        self.branch = BoundaryBranch(feature_channels, 2 if depth_edges else 1)
        self.last_boundary: torch.Tensor | None = None

    needs_pseudo_labels = True
    build_options: dict[str, Any]
    """Set by StructureLosses: the options it was built with (it is reused while they stay equal)."""

    def predict(self, features: Sequence[torch.Tensor], rgb: torch.Tensor, depth_m: torch.Tensor | None,
                ) -> torch.Tensor:
        """Boundary logits (B, 1, h0, w0) on the grid of features[0] (stride 4)."""
        size = spatial_size(features[0])
        edges = [canny_edges(rgb, size, self.canny_low, self.canny_high)]
        if self.depth_edges:
            if depth_m is None:
                raise ValueError("boundary branch with depth_edges=True needs depth_m")
            edges.append(canny_edges(depth_for_canny(depth_m), size, self.canny_low, self.canny_high))
        feats = [f.detach() for f in features] if self.detach_features else list(features)
        return self.branch(feats, torch.cat(edges, dim=1).to(features[0].device))

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        check_cam_and_tags(cam_logits, tags, "boundary")
        features: list[torch.Tensor] = require(context, "features", "boundary")
        rgb: torch.Tensor = require(context, "rgb", "boundary")
        logits = self.predict(features, rgb, depth_m)
        self.last_boundary = torch.sigmoid(logits.detach())
        labels = context.get("pseudo_labels")
        anchor = zero_loss(cam_logits)  # keeps the CAM in the graph (its gradient is exactly 0)
        if labels is None:
            return anchor + logits.sum() * 0.0
        target, valid = boundary_targets(labels.to(logits.device), spatial_size(logits))
        return anchor + balanced_bce(logits, target, valid)

    def extra_repr(self) -> str:
        return f"canny=({self.canny_low}, {self.canny_high}), depth_edges={self.depth_edges}"
