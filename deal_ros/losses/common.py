"""Shared checks and helpers of the structure losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from deal_ros.depth.filters import normalize_cam


def check_cam_and_tags(cam_logits: torch.Tensor, tags: torch.Tensor, name: str) -> None:
    """Refuse malformed inputs with a message naming the loss: cam (B, K, h, w) finite, tags (B, K) in {0, 1}."""
    if not isinstance(cam_logits, torch.Tensor) or cam_logits.ndim != 4 or 0 in cam_logits.shape[:2]:
        raise ValueError(f"{name}: cam_logits must be a (B, K, h, w) tensor, got {getattr(cam_logits, 'shape', None)}")
    if not isinstance(tags, torch.Tensor) or tuple(tags.shape) != tuple(cam_logits.shape[:2]):
        got = getattr(tags, "shape", None)
        raise ValueError(f"{name}: tags must be (B, K) = {tuple(cam_logits.shape[:2])}, got {got}")
    if not bool(((tags == 0) | (tags == 1)).all()):
        raise ValueError(f"{name}: tags must contain only 0 and 1")
    if not bool(torch.isfinite(cam_logits.detach()).all()):
        raise ValueError(f"{name}: cam_logits contain NaN or Inf")


def require(context: Mapping[str, Any], key: str, name: str) -> Any:
    """A context entry the loss cannot work without (e.g. rgb for FSL: a tensor; features: a list of them)."""
    value = context.get(key)
    if value is None:
        raise ValueError(f"{name} needs '{key}' in its context (see deal_ros.losses for the call convention)")
    return value


def tagged_mask(tags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, K) tags -> bool mask broadcast to `like` (B, K, ...)."""
    return tags.to(device=like.device).bool().view(*tags.shape, *([1] * (like.ndim - 2))).expand_as(like)


def grid_size(height: int, width: int, stride: int) -> tuple[int, int]:
    return max(1, height // stride), max(1, width // stride)


def spatial_size(x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a (..., H, W) tensor."""
    return x.shape[-2], x.shape[-1]


def max_norm_cam(cam_logits: torch.Tensor, size: tuple[int, int] | None = None, tau: float = 1e-5) -> torch.Tensor:
    """CAM logits (B, K, h, w) -> ReLU, optional bilinear resize to `size`, per (image, class) max-normalised to [0, 1].

    Max (not min-max) normalisation keeps 0 = no evidence, which the confidence thresholds need.
    """
    cam = cam_logits.float()
    if size is not None and tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return normalize_cam(cam, "max", tau)


def zero_loss(cam_logits: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to the graph (so backward works and gives exact zeros)."""
    return cam_logits.float().sum() * 0.0
