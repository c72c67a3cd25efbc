"""Support-plane loss: no class may be evidenced by the surface the objects stand on.

A GAP classifier is free to recognise a class from its context (the textured table it is always
seen on) and then its CAM is high over the whole frame. Pixels on or behind the support plane
(deal_ros.depth.support_plane) are known background, so every class's CAM logit there is pushed
below zero, like a negative label for those cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def support_plane_loss(cam_logits: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Mean softplus of cam_logits (B, K, h, w) over the cells that are mostly background.

    background: (B, 1, H, W) bool at any resolution (area-resampled to the CAM grid; a cell counts when more
    than half of it is background). Returns 0 (with a gradient path) when no cell qualifies.
    """
    cells = F.interpolate(background.float(), size=cam_logits.shape[-2:], mode="area") > 0.5  # (B, 1, h, w)
    weight = cells.to(cam_logits.dtype).expand_as(cam_logits)
    total = weight.sum()
    return (F.softplus(cam_logits.float()) * weight).sum() / total.clamp_min(1.0)
