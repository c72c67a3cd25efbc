"""Training losses. Every structure loss is an nn.Module called as ``loss(cam_logits, depth_m, tags)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deal_ros.losses.deal import DEAL_PRESETS, DEALLoss, cam_edge_map, deal_loss, normalize_cam, soft_binarize


def classification_loss(class_logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss (mean BCE with logits) of (B, K) logits against (B, K) tags."""
    return F.multilabel_soft_margin_loss(class_logits.float(), tags.float())


__all__ = [
    "DEAL_PRESETS",
    "DEALLoss",
    "cam_edge_map",
    "classification_loss",
    "deal_loss",
    "normalize_cam",
    "soft_binarize",
]
