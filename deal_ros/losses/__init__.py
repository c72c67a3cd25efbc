"""Training losses: classification, DEAL and the structure losses (ISL, FSL, smoothness, boundary branch, SSC).

Call convention of every loss module (DEALLoss, ISLLoss, FSLLoss, SmoothnessLoss, BoundaryLoss, SSCLoss,
ReconstructionLoss)::

    loss(cam_logits, depth_m, tags, **context) -> scalar tensor

- cam_logits: (B, K, h, w) CAM logits of the K foreground classes (any dtype; computed in float32).
- depth_m: (B, 1, H, W) depth in metres aligned to the input image, 0 or NaN = hole (None where unused).
- tags: (B, K) image-level tags in {0, 1}.
- context (keyword-only; every loss ignores the keys it does not use, so one dict serves all):
    rgb: (B, 3, H, W) float RGB **in [0, 1]**, the network input before normalisation (after augmentation);
    pseudo_labels: (B, H', W') int64, 0 = background, k = class k (1-based), 255 = ignore; None until the
        trainer starts making them (then losses that need them return 0);
    features: the backbone features [stride 4, stride 8, final] of CAMOutput (with gradient);
    step: the trainer's step count (for losses that start late, e.g. SSC);
    boundary: (B, 1, H/4, W/4) boundary probability from BoundaryLoss (detached), for smoothness 'learned'.

Structure losses give untagged classes exactly zero gradient; ISL is a classification loss and, like
L_gap, pushes untagged classes down. DEALLoss takes no context (positional call only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deal_ros.losses.boundary import BoundaryBranch, BoundaryLoss, boundary_targets, canny_edges
from deal_ros.losses.deal import DEAL_PRESETS, DEALLoss, cam_edge_map, deal_loss, normalize_cam, soft_binarize
from deal_ros.losses.fsl import FSLLoss, feature_similarity_loss, feature_similarity_loss_dense
from deal_ros.losses.isl import ISLLoss, importance_sampling_loss
from deal_ros.losses.smoothness import SmoothnessLoss, label_boundaries, smoothness_loss
from deal_ros.losses.ssc import ReconstructionLoss, SSCLoss, self_modulation_loss, superpixels


def classification_loss(class_logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss (mean BCE with logits) of (B, K) logits against (B, K) tags."""
    return F.multilabel_soft_margin_loss(class_logits.float(), tags.float())


__all__ = [
    "DEAL_PRESETS",
    "BoundaryBranch",
    "BoundaryLoss",
    "DEALLoss",
    "FSLLoss",
    "ISLLoss",
    "ReconstructionLoss",
    "SSCLoss",
    "SmoothnessLoss",
    "boundary_targets",
    "cam_edge_map",
    "canny_edges",
    "classification_loss",
    "deal_loss",
    "feature_similarity_loss",
    "feature_similarity_loss_dense",
    "importance_sampling_loss",
    "label_boundaries",
    "normalize_cam",
    "self_modulation_loss",
    "smoothness_loss",
    "soft_binarize",
    "superpixels",
]
