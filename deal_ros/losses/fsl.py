"""FSL: the feature-similarity loss (Jonnarth et al.), in a local-window form.

For pixel pairs (i, j) on the CAM grid:

    L = -1 / (B h w) * sum_{i != j} g(|p_i - p_j|) * f(c_ij) * 0.5 ||y_i - y_j||^2

- c_ij: colour distance, L1 over RGB in [0, 1] divided by 3 (the image is resampled to the CAM grid);
- f = :func:`deal_ros.losses.soft_binarize`, i.e. tanh(mu + log(c / (1 - c))): -1 for identical colours,
  0 at c = sigmoid(-mu) (7.6 % for mu = 2.5), -> +1 for very different colours. With the leading minus,
  similar-colour pairs are pulled to the same CAM vector and different-colour pairs pushed apart;
- y: the normalised CAM vector (background, class 1..K): each tagged class ReLU + max-normalised,
  untagged classes 0, background = 1 - max_k (as in the reference code, SEAM's ``max_norm``);
- g: Gaussian of the pixel distance, exp(-d^2 / (2 sigma^2)) / (2 pi sigma^2), sigma = 5 cells.

The original sums over all (h w)^2 pairs. Here only pairs with d <= radius enter (the Gaussian
weight beyond 2 sigma is small; radius 10 = the reference's ``max_dist``): memory and time are
O(B * (K + 1) * h * w * radius^2), the memory held by autograd for backward. With radius >= the grid
diagonal the result equals the dense form (:func:`feature_similarity_loss_dense`, kept for tests).
The reference squares the full distance; the method's definition halves it: we use half.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.losses.common import check_cam_and_tags, max_norm_cam, require, tagged_mask
from deal_ros.losses.deal import soft_binarize


def cam_vectors(cam_logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, K + 1, h, w) vectors: background 1 - max_k, tagged classes max-normalised,
    untagged classes exactly 0 (masked_fill: their gradient is exactly 0)."""
    cam = max_norm_cam(cam_logits)
    cam = cam.masked_fill(~tagged_mask(tags, cam), 0.0)
    return torch.cat([1.0 - cam.amax(dim=1, keepdim=True), cam], dim=1)


def colour_on_grid(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> (B, 3, h, w), antialiased (the reference resamples without antialias)."""
    rgb = rgb.float()
    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb
    return F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with 0 < |(dy, dx)| <= radius in one half-plane: each unordered pair once."""
    return [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < dy * dy + dx * dx <= radius * radius and (dy > 0 or dx > 0)]


def _pair_slices(h: int, w: int, dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Index pairs (i, i + (dy, dx)) inside an h x w grid as two aligned slices."""
    ys, yt = slice(0, h - dy), slice(dy, h)
    xs = slice(max(0, -dx), w - max(0, dx))
    xt = slice(max(0, dx), w + min(0, dx))
    return (ys, xs), (yt, xt)


def feature_similarity_loss(cam_logits: torch.Tensor, rgb: torch.Tensor, tags: torch.Tensor, mu: float = 2.5,
                            sigma: float = 5.0, radius: int = 10) -> torch.Tensor:
    """Local-window FSL (see the module docstring). cam (B, K, h, w); rgb (B, 3, H, W) in [0, 1]; tags (B, K)."""
    check_cam_and_tags(cam_logits, tags, "FSL")
    b, _, h, w = cam_logits.shape
    y = cam_vectors(cam_logits, tags)
    x = colour_on_grid(rgb.to(y.device), (h, w))
    total = y.new_zeros(())
    norm = 1.0 / (2.0 * math.pi * sigma * sigma)
    for dy, dx in window_offsets(radius):
        if dy >= h or abs(dx) >= w:
            continue
        (ys, xs), (yt, xt) = _pair_slices(h, w, dy, dx)
        colour = ((x[..., ys, xs] - x[..., yt, xt]).abs().sum(dim=1) / 3.0).clamp(0.0, 1.0)
        cam_dist = 0.5 * (y[..., ys, xs] - y[..., yt, xt]).pow(2).sum(dim=1)
        gauss = norm * math.exp(-0.5 * (dy * dy + dx * dx) / (sigma * sigma))
        total = total + (2.0 * gauss) * (soft_binarize(colour, mu) * cam_dist).sum()  # x2: both orders of the pair
    return -total / (b * h * w)


def feature_similarity_loss_dense(cam_logits: torch.Tensor, rgb: torch.Tensor, tags: torch.Tensor, mu: float = 2.5,
                                  sigma: float = 5.0, radius: float | None = None) -> torch.Tensor:
    """The original O((h w)^2) form (all pairs; optionally only d <= radius). For tests and memory comparison."""
    check_cam_and_tags(cam_logits, tags, "FSL")
    b, _, h, w = cam_logits.shape
    y = cam_vectors(cam_logits, tags).flatten(2).transpose(1, 2)  # (B, hw, K+1)
    x = colour_on_grid(rgb.to(y.device), (h, w)).flatten(2).transpose(1, 2)  # (B, hw, 3)
    colour = (torch.cdist(x, x, p=1.0) / 3.0).clamp(0.0, 1.0)
    sq = y.pow(2).sum(-1)
    cam_dist = 0.5 * (sq[:, :, None] + sq[:, None, :] - 2.0 * y @ y.transpose(1, 2)).clamp_min(0.0)
    yy, xx = torch.meshgrid(torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij")
    pos = torch.stack([yy, xx], dim=-1).reshape(1, -1, 2).float()
    d2 = torch.cdist(pos, pos).pow(2)
    gauss = torch.exp(-0.5 * d2 / (sigma * sigma)) / (2.0 * math.pi * sigma * sigma)
    if radius is not None:
        gauss = gauss * (d2 <= radius * radius)
    return -(gauss * soft_binarize(colour, mu) * cam_dist).sum() / (b * h * w)


class FSLLoss(nn.Module):
    """Module form of :func:`feature_similarity_loss`; needs ``rgb`` (B, 3, H, W) in [0, 1] in the context."""

    def __init__(self, mu: float = 2.5, sigma: float = 5.0, radius: int = 10) -> None:
        super().__init__()
        self.mu, self.sigma, self.radius = mu, sigma, radius

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        rgb: torch.Tensor = require(context, "rgb", "FSL")
        return feature_similarity_loss(cam_logits, rgb, tags, self.mu, self.sigma, self.radius)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, sigma={self.sigma}, radius={self.radius}"
