"""DEAL: the Depth Edge Alignment Loss (Schmidt, Belagiannis, Nalpantidis, 2025).

Rewards class activation maps whose edges coincide with depth edges. Model-agnostic: give it
CAM logits, depth in metres and image-level tags from any network.

Two settings matter: the paper's depth-edge map (Sobel of metric depth divided by the
image maximum, ``DEAL_PRESETS["paper"]``) and the robot-robust map used by default (Sobel minus the
local plane's gradient on log-depth, with a fixed edge threshold, ``DEAL_PRESETS["robust"]``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.config import DealLossConfig, EdgeNorm, EdgeOperator, GridStride, HoleFill
from deal_ros.depth.filters import gradient_magnitude, normalize_cam, sobel_xy
from deal_ros.depth.maps import depth_edge_map, normalize_by_max
from deal_ros.losses.common import grid_size as cell_grid

DEFAULTS = DealLossConfig()
"""The options' defaults are the config's (``loss.deal``), so the loss and the trainer cannot drift apart."""

DEAL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"edge_operator": "sobel", "log_depth": False, "edge_norm": "max"},
    "robust": {key: getattr(DEFAULTS, key) for key in ("edge_operator", "log_depth", "edge_norm", "edge_threshold")},
}
"""Named depth-edge settings as overrides of the config's loss.deal ('robust' is its default); the other
keywords keep their defaults unless given."""


def soft_binarize(a: torch.Tensor, mu: float = 2.5) -> torch.Tensor:
    """f(a) = tanh(mu + log(a / (1 - a))) in its rational form, for a in [0, 1].

    f(0) = -1, f(1) = 1, f(sigmoid(-mu)) = 0; no log and no 0/0 anywhere on [0, 1].
    """
    c = math.exp(-2.0 * mu)
    a2, b2 = a * a, c * (1.0 - a) * (1.0 - a)
    return (a2 - b2) / (a2 + b2)


def cam_edge_map(cam_logits: torch.Tensor, cam_norm: str = "minmax") -> torch.Tensor:
    """CAM logits (B, K, h, w) -> edge map in [0, 1]: normalise, Sobel magnitude, divide by the map max."""
    return normalize_by_max(gradient_magnitude(*sobel_xy(normalize_cam(cam_logits, cam_norm))))


def _shape(x: object) -> tuple:
    return tuple(getattr(x, "shape", ()))


def _check_inputs(cam_logits: torch.Tensor, depth_m: torch.Tensor, tags: torch.Tensor) -> None:
    if not isinstance(cam_logits, torch.Tensor) or cam_logits.ndim != 4:
        raise ValueError(f"cam_logits must be a (B, K, h, w) tensor, got shape {_shape(cam_logits)}")
    b, k = cam_logits.shape[:2]
    if k == 0 or b == 0:
        raise ValueError(f"cam_logits must have B >= 1 images and K >= 1 classes, got shape {tuple(cam_logits.shape)}")
    if not isinstance(depth_m, torch.Tensor) or depth_m.ndim != 4 or depth_m.shape[1] != 1:
        raise ValueError(f"depth_m must be a (B, 1, H, W) tensor in metres, got shape {_shape(depth_m)}")
    if depth_m.shape[0] != b:
        raise ValueError(f"batch size mismatch: cam_logits has {b} images, depth_m has {depth_m.shape[0]}")
    if not isinstance(tags, torch.Tensor) or tags.ndim != 2:
        raise ValueError(f"tags must be a (B, K) tensor of 0/1, got shape {_shape(tags)}")
    if tags.shape != (b, k):
        raise ValueError(f"tags shape {tuple(tags.shape)} does not match cam_logits (B, K) = ({b}, {k})")
    if not bool(((tags == 0) | (tags == 1)).all()):
        raise ValueError("tags must contain only 0 and 1")
    if not bool(torch.isfinite(cam_logits.detach()).all()):
        raise ValueError("cam_logits contain NaN or Inf (diverged training or bad input)")


def deal_loss(
    cam_logits: torch.Tensor,
    depth_m: torch.Tensor,
    tags: torch.Tensor,
    cell_mask: torch.Tensor | None = None,
    *,
    mu: float = DEFAULTS.mu,
    grid_stride: GridStride = DEFAULTS.grid_stride,
    grid_size: tuple[int, int] | None = None,
    edge_operator: EdgeOperator = DEFAULTS.edge_operator,
    log_depth: bool = DEFAULTS.log_depth,
    edge_norm: EdgeNorm = DEFAULTS.edge_norm,
    edge_threshold: float = DEFAULTS.edge_threshold,
    edge_percentile: float = DEFAULTS.edge_percentile,
    plane_window: int = DEFAULTS.plane_window,
    hole_fill: HoleFill = DEFAULTS.hole_fill,
    hole_exclude_window: int = DEFAULTS.hole_exclude_window,
    cam_norm: Literal["minmax", "max"] = DEFAULTS.cam_norm,
) -> torch.Tensor:
    """Depth Edge Alignment Loss, a scalar in [-1, 1] (-1 = CAM edges agree with depth edges everywhere).

    Args:
        cam_logits: (B, K, h, w) CAM logits of the K foreground classes (any dtype; computed in fp32).
        depth_m: (B, 1, H, W) depth in metres aligned to the network input; 0 or NaN = hole.
        tags: (B, K) image-level tags in {0, 1}. Images without tags are skipped; if none is left the
            loss is 0. Untagged classes get exactly zero gradient; depth gets none.
        cell_mask: (B, 1, H, W) bool at depth_m's size, or None (everywhere): the loss counts only the grid
            cells that hold a True pixel (loss.deal.region); images without one are skipped.
        grid_stride: the loss grid is (H // grid_stride, W // grid_stride) unless grid_size is given.
        The other keywords choose the depth-edge map (see :func:`deal_ros.depth.maps.depth_edge_map`) and
        the CAM normalisation; their defaults and meaning are those of ``deal_ros.config.DealLossConfig``
        (``loss.deal``), and ``DEAL_PRESETS`` names the paper's and the robust setting.
    """
    _check_inputs(cam_logits, depth_m, tags)
    height, width = depth_m.shape[-2:]
    size = (grid_size[0], grid_size[1]) if grid_size is not None else cell_grid(height, width, grid_stride)
    device_type = cam_logits.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        depth_a, valid = depth_edge_map(
            depth_m.to(cam_logits.device), size, edge_operator=edge_operator, log_depth=log_depth,
            edge_norm=edge_norm, edge_threshold=edge_threshold, edge_percentile=edge_percentile,
            plane_window=plane_window, hole_fill=hole_fill, hole_exclude_window=hole_exclude_window, mu=mu)
        if cell_mask is not None:
            if cell_mask.shape != depth_m.shape:
                raise ValueError(f"cell_mask must be (B, 1, H, W) like depth_m {tuple(depth_m.shape)}, "
                                 f"got {tuple(cell_mask.shape)}")
            cells = F.adaptive_max_pool2d(cell_mask.to(device=cam_logits.device, dtype=torch.float32), size) > 0
            valid = valid & cells
        y = tags.to(device=cam_logits.device, dtype=torch.float32)
        cam = F.interpolate(cam_logits.float(), size=size, mode="bilinear", align_corners=False)
        f_cam = soft_binarize(cam_edge_map(cam, cam_norm), mu)  # (B, K, h', w')
        f_depth = soft_binarize(depth_a, mu)  # (B, 1, h', w')
        # Only tagged classes enter; masked_fill (not a product) keeps untagged gradients exactly 0.
        tagged = y.bool()[:, :, None, None].expand_as(f_cam)
        agreement = f_cam.masked_fill(~tagged, 0.0).sum(dim=1, keepdim=True) * f_depth
        num_tags = y.sum(dim=1)
        num_valid = valid.flatten(1).sum(dim=1).float()
        keep = (num_tags > 0) & (num_valid > 0)
        per_image = -(agreement.masked_fill(~valid, 0.0).flatten(1).sum(dim=1)) / (
            num_tags.clamp_min(1.0) * num_valid.clamp_min(1.0))
        if not bool(keep.any()):
            return per_image.sum() * 0.0
        return per_image[keep].mean()


class DEALLoss(nn.Module):
    """Module form of :func:`deal_loss`; ``DEALLoss.from_preset('paper')`` gives the paper's setting,
    ``DEALLoss.from_config(cfg.loss.deal)`` a configuration's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        defaults = deal_loss.__kwdefaults__
        assert defaults is not None  # deal_loss's options are keyword-only with defaults
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"DEALLoss got unknown options {sorted(unknown)}; known: {sorted(defaults)}")
        self.options = {**defaults, **kwargs}

    @classmethod
    def from_config(cls, cfg: DealLossConfig, **overrides: Any) -> DEALLoss:
        """The loss with a config's options (``loss.deal``; its schedule fields stay with the trainer)."""
        return cls(**{**cfg.loss_kwargs(), **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DEALLoss:
        if name not in DEAL_PRESETS:
            raise ValueError(f"unknown DEAL preset {name!r}; known: {sorted(DEAL_PRESETS)}")
        return cls(**{**DEAL_PRESETS[name], **overrides})

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor, tags: torch.Tensor,
                cell_mask: torch.Tensor | None = None, **context: Any) -> torch.Tensor:
        """`context` (rgb, pseudo_labels, ...) is accepted for the shared loss convention and not used."""
        return deal_loss(cam_logits, depth_m, tags, cell_mask, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
