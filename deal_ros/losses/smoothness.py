"""Boundary-guided smoothness of the CAM (Liu et al. 2021, structure-aware WSSS).

The max-normalised CAM of each *tagged* class, on a loss grid (stride 4 by default), pays a
Charbonnier penalty rho(x) = sqrt(x^2 + 1e-6) - 1e-3 on its first differences (x and y) and second
differences (xx and yy), each weighted by exp(-alpha |grad S|): smoothness is enforced inside regions
and released where the boundary map S changes. ``guide='edge'`` uses exp(-alpha max S) over the
pair/triple instead, which suits S that is itself an edge strength (a Sobel depth-edge response marks
both cells beside a jump, so |grad S| is ~0 exactly across the jump and the paper's form releases the
cells one step off it).

The paper's text weights the second-order term 10x the first; its released code does the opposite
(10:1). Both weights are configurable; defaults first 1.0, second 0.1 (the code's ratio).

S comes from (ours, for robots): ``'depth'`` (the depth-edge map of :func:`deal_ros.depth.maps.depth_edge_map`,
the same operator as DEAL), ``'pseudo_label'`` (1 on the current pseudo-label's boundaries and ignore
band) or ``'learned'`` (the semantic boundary branch's prediction, context key ``boundary``).
Untagged classes get exactly zero gradient; S never receives one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.config import IGNORE_INDEX
from deal_ros.depth.maps import depth_edge_map
from deal_ros.losses.common import (
    check_cam_and_tags,
    grid_size,
    max_norm_cam,
    require,
    spatial_size,
    tagged_mask,
    zero_loss,
)

SOURCES = ("depth", "pseudo_label", "learned")
CHARBONNIER_EPS = 1e-6


def charbonnier(x: torch.Tensor, eps: float = CHARBONNIER_EPS) -> torch.Tensor:
    """sqrt(x^2 + eps) - sqrt(eps): smooth L1-like penalty, 0 at 0, finite gradient everywhere."""
    return torch.sqrt(x * x + eps) - eps**0.5


@torch.no_grad()
def label_boundaries(labels: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Pseudo-labels (B, H, W) int (255 = ignore) -> boundary map (B, 1, *size) in {0, 1}.

    1 where a pixel's label differs from its right or lower neighbour (one cell thick, on the first
    side of the change) and on ignore pixels (the uncertain band may hold the boundary anywhere).
    """
    lab = labels[:, None].float()
    if size is not None and tuple(lab.shape[-2:]) != tuple(size):
        lab = F.interpolate(lab, size=size, mode="nearest-exact")
    change = torch.zeros_like(lab, dtype=torch.bool)
    change[..., :, :-1] |= lab[..., :, 1:] != lab[..., :, :-1]
    change[..., :-1, :] |= lab[..., 1:, :] != lab[..., :-1, :]
    return (change | (lab == IGNORE_INDEX)).float()


def _first_weights(s: torch.Tensor, alpha: float, guide: str, dim: int) -> torch.Tensor:
    """exp(-alpha g) per neighbour pair along `dim` (-1 = x, -2 = y); g = |S_j - S_i| or max(S_i, S_j)."""
    n = s.shape[dim]
    a, b = s.narrow(dim, 0, n - 1), s.narrow(dim, 1, n - 1)
    return torch.exp(-alpha * ((b - a).abs() if guide == "gradient" else torch.maximum(a, b)))


def smoothness_loss(cam_logits: torch.Tensor, tags: torch.Tensor, boundary: torch.Tensor,
                    valid: torch.Tensor | None = None, alpha: float = 10.0, first_order_weight: float = 1.0,
                    second_order_weight: float = 0.1, guide: str = "gradient") -> torch.Tensor:
    """Weighted Charbonnier smoothness; cam (B, K, h', w') is resized to boundary's grid (B, 1, h, w) in [0, 1].

    valid: optional (B, 1, h, w) bool; differences touching an invalid cell are dropped. Images without
    tags contribute nothing; a batch without tags gives 0.
    """
    check_cam_and_tags(cam_logits, tags, "smoothness")
    if guide not in ("gradient", "edge"):
        raise ValueError(f"guide must be 'gradient' or 'edge', got {guide!r}")
    size = spatial_size(boundary)
    cam = max_norm_cam(cam_logits, size)
    tagged = tagged_mask(tags, cam)
    if not bool(tagged.any()):
        return zero_loss(cam_logits)
    s = boundary.detach().to(cam).clamp(0.0, 1.0)
    v = torch.ones_like(s, dtype=torch.bool) if valid is None else valid.to(device=cam.device, dtype=torch.bool)
    total = cam.new_zeros(())
    for dim in (-1, -2):
        n = cam.shape[dim]
        if n < 2:
            continue
        w1 = _first_weights(s, alpha, guide, dim)  # (B, 1, ...) over pairs
        ok1 = v.narrow(dim, 0, n - 1) & v.narrow(dim, 1, n - 1)
        d1 = cam.narrow(dim, 1, n - 1) - cam.narrow(dim, 0, n - 1)
        m1 = tagged.narrow(dim, 0, n - 1) & ok1
        term1 = (charbonnier(d1) * w1).masked_fill(~m1, 0.0).sum() / m1.sum().clamp_min(1)
        total = total + first_order_weight * term1
        if n >= 3 and second_order_weight > 0:
            # A triple (i-1, i, i+1) is released when either of its pairs crosses S.
            w2 = torch.minimum(w1.narrow(dim, 0, n - 2), w1.narrow(dim, 1, n - 2))
            d2 = d1.narrow(dim, 1, n - 2) - d1.narrow(dim, 0, n - 2)
            m2 = tagged.narrow(dim, 0, n - 2) & ok1.narrow(dim, 0, n - 2) & ok1.narrow(dim, 1, n - 2)
            term2 = (charbonnier(d2) * w2).masked_fill(~m2, 0.0).sum() / m2.sum().clamp_min(1)
            total = total + second_order_weight * term2
    return total


class SmoothnessLoss(nn.Module):
    """Boundary-guided smoothness with S from depth, pseudo-labels or the learned boundary branch.

    Context: ``pseudo_labels`` (B, H', W') for source 'pseudo_label', ``boundary`` (B, 1, H', W') in [0, 1]
    for 'learned'; when the needed entry is None (e.g. before the pseudo-labels start) the loss is 0.
    depth_edge_kwargs: options of :func:`deal_ros.depth.maps.depth_edge_map` (the trainer passes DEAL's).
    """

    def __init__(self, source: str = "depth", alpha: float = 10.0, first_order_weight: float = 1.0,
                 second_order_weight: float = 0.1, guide: str = "gradient", grid_stride: int = 4,
                 depth_edge_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.source, self.alpha, self.guide, self.grid_stride = source, alpha, guide, grid_stride
        self.first_order_weight, self.second_order_weight = first_order_weight, second_order_weight
        self.depth_edge_kwargs = dict(depth_edge_kwargs or {})

    @property
    def needs_pseudo_labels(self) -> bool:
        return self.source == "pseudo_label"

    def boundary_map(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, **context: Any,
                     ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """S (B, 1, h, w) in [0, 1] and its validity (or None), or None when the source is not available yet."""
        if self.source == "depth":
            if depth_m is None:
                raise ValueError("smoothness with source='depth' needs depth_m (B, 1, H, W)")
            size = grid_size(*spatial_size(depth_m), self.grid_stride)
            edges, valid = depth_edge_map(depth_m.to(cam_logits.device), size, **self.depth_edge_kwargs)
            return edges, valid
        key = "pseudo_labels" if self.source == "pseudo_label" else "boundary"
        value = context.get(key)
        if value is None:
            return None
        if self.source == "pseudo_label":
            rgb = context.get("rgb")
            full = spatial_size(rgb if rgb is not None else value)
            return label_boundaries(value.to(cam_logits.device), grid_size(*full, self.grid_stride)), None
        return require(context, "boundary", "smoothness").detach(), None

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        found = self.boundary_map(cam_logits, depth_m, **context)
        if found is None:
            check_cam_and_tags(cam_logits, tags, "smoothness")
            return zero_loss(cam_logits)
        boundary, valid = found
        return smoothness_loss(cam_logits, tags, boundary, valid, self.alpha, self.first_order_weight,
                               self.second_order_weight, self.guide)

    def extra_repr(self) -> str:
        return (f"source={self.source!r}, alpha={self.alpha}, first={self.first_order_weight}, "
                f"second={self.second_order_weight}, guide={self.guide!r}")
