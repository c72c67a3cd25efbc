"""Pseudo-labels from CAMs and image-level tags, with an optional RGB-D refinement.

Label ids: 0 = background, k = foreground class k (1-based), 255 = ignore (the uncertain band
between clearly background and clearly foreground).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deal_ros.config import IGNORE_INDEX, PseudoLabelConfig
from deal_ros.depth.filters import normalize_cam
from deal_ros.depth.maps import pyramid_fill, valid_depth
from deal_ros.depth.support_plane import SupportPlane, fit_support_plane
from deal_ros.labels.class_groups import merge_class_scores
from deal_ros.labels.objects import one_class_per_object, remember_parts
from deal_ros.labels.part_names import PartBank

_DILATIONS = (1, 2, 4, 8)


def class_scores(cam_logits: torch.Tensor, tags: torch.Tensor, size: tuple[int, int], cam_norm: str = "max",
                 ) -> torch.Tensor:
    """CAM logits (B, K, h, w) -> foreground scores (B, K, *size) in [0, 1]: upsample, then ReLU + per-class
    max ('max') or min-max ('minmax') normalisation; classes not tagged in an image score 0 there."""
    cam = F.interpolate(cam_logits.float(), size=size, mode="bilinear", align_corners=False)
    return normalize_cam(cam, cam_norm, tau=1e-5) * tags.to(cam)[:, :, None, None]


def fit_depth_prior(depth_m: torch.Tensor, cfg: PseudoLabelConfig) -> SupportPlane:
    """The support surfaces of depth_m (B, 1, H, W) metres as cfg configures them (tolerance, flat slabs, container
    walls, extra planes): the one place the pseudo-labels, the training objective and the scripts get them from.
    A frame's surfaces depend on the frame alone, not on its batch-mates (one RANSAC draw serves every frame)."""
    return fit_support_plane(depth_m, cfg.support_tolerance, slab_height=cfg.slab_height, walls=cfg.container_walls,
                             extra_planes=cfg.extra_planes)


@torch.no_grad()
def remember_frame_parts(bank: PartBank, rgb: torch.Tensor, depth_m: torch.Tensor, tags: torch.Tensor,
                         cfg: PseudoLabelConfig) -> None:
    """Add the depth parts of frames rgb (B, 3, H, W) in [0, 1], depth_m (B, 1, H, W) metres, tags (B, K) to bank as
    make_pseudo_labels finds them at that size (the prior of cfg): the bank `deal-ros label` fills before it labels."""
    depth = torch.nan_to_num(depth_m.float(), nan=0.0)
    stands_out = fit_depth_prior(depth, cfg).prior[:, 0] > 0
    remember_parts(bank, rgb, stands_out, depth[:, 0], tags)


def _neighbour_offsets() -> list[tuple[int, int]]:
    return [(dy * d, dx * d) for d in _DILATIONS for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _neighbours(x: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, N, C, H, W): x shifted by each offset, replicate padding (one pad, N views)."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    h, w = x.shape[-2:]
    return torch.stack([padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w] for dy, dx in offsets], dim=1)


@torch.no_grad()
def refine_scores(scores: torch.Tensor, rgb: torch.Tensor, depth_m: torch.Tensor | None, iterations: int = 10,
                  sigma_rgb: float = 0.1, sigma_depth: float = 0.02) -> torch.Tensor:
    """Propagate scores (B, C, h, w) along RGB-D affinities (PAR-style, dilated 3x3 neighbourhoods).

    rgb: (B, 3, h, w) in [0, 1]; depth_m: (B, 1, h, w) metres, 0/NaN = hole (the depth term is
    dropped where either pixel is a hole). Neighbours across a colour or a relative depth jump
    (|dz| / z > sigma_depth) get little weight, so labels stop at object boundaries.
    """
    offsets = _neighbour_offsets()
    rgb_n = _neighbours(rgb, offsets)  # (B, N, 3, h, w)
    logits = -((rgb_n - rgb[:, None]) ** 2).sum(dim=2) / (2 * sigma_rgb**2)  # (B, N, h, w)
    if depth_m is not None:
        valid = valid_depth(depth_m)
        depth = pyramid_fill(torch.where(valid, depth_m, torch.zeros_like(depth_m)).abs(), valid)
        depth_n = _neighbours(depth, offsets)[:, :, 0]
        valid_n = _neighbours(valid.float(), offsets)[:, :, 0] > 0
        rel = (depth_n - depth) / depth.clamp_min(1e-6)
        logits = logits - torch.where(valid_n & valid, rel**2 / (2 * sigma_depth**2), torch.zeros_like(rel))
    weights = torch.softmax(logits, dim=1)  # (B, N, h, w)
    for _ in range(iterations):
        scores = (_neighbours(scores, offsets) * weights[:, :, None]).sum(dim=1)
    return scores


@torch.no_grad()
def make_pseudo_labels(
    cam_logits: torch.Tensor,
    tags: torch.Tensor,
    size: tuple[int, int],
    cfg: PseudoLabelConfig,
    rgb: torch.Tensor | None = None,
    depth_m: torch.Tensor | None = None,
    plane_prior: torch.Tensor | None = None,
    representatives: torch.Tensor | None = None,
    part_bank: PartBank | None = None,
    add_to_bank: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM logits (B, K, h, w) + tags (B, K) -> (labels (B, *size) int64 with 255 = ignore, top score (B, *size)).

    rgb: optional (B, 3, H, W) in [0, 1] and depth_m (B, 1, H, W) for cfg.refine='depth_bilateral' and
    cfg.support_plane. The refinement runs at a quarter of `size` and is upsampled, which keeps it cheap.
    plane_prior: (B, 1, *size) int8 as SupportPlane.prior (default, with cfg.support_plane and depth: fitted
    here). Pixels on or behind the support plane are background whatever the CAM says; pixels that stand out
    of it take their tagged class with the top score when it reaches cfg.object_threshold, else ignore; with
    cfg.one_class_per_object, one class per depth part (deal_ros.labels.objects).
    representatives: (K,) int64 as TagContrast.representatives(): each group of classes the tags cannot tell
    apart is labelled as its first member (deal_ros.labels.class_groups.merge_class_scores), before everything else.
    part_bank: with cfg.part_contrast and rgb, the depth parts are scored against it for the classes the contrast
    between tag patterns names (deal_ros.labels.part_names), then added to it (with add_to_bank).
    """
    by_contrast = cfg.part_contrast and part_bank is not None and rgb is not None
    by_part = cfg.one_class_per_object or by_contrast
    depth_at_size = None  # depth at the labels' size: for the plane fit and the depth parts, when they are needed
    if depth_m is not None and ((plane_prior is None and cfg.support_plane) or by_part):
        depth_at_size = F.interpolate(torch.nan_to_num(depth_m.float(), nan=0.0), size=size, mode="nearest-exact")
    if plane_prior is None and cfg.support_plane and depth_at_size is not None:
        plane_prior = fit_depth_prior(depth_at_size, cfg).prior
    keep = None if plane_prior is None else (plane_prior >= 0).to(cam_logits.device, torch.float32)
    scores = class_scores(cam_logits, tags, size, cfg.cam_norm)
    if representatives is not None:
        scores, tags = merge_class_scores(scores, tags, representatives)
    if keep is not None:
        scores = scores * keep
    if cfg.refine == "depth_bilateral" and rgb is not None and cfg.refine_iterations > 0:
        small = (max(1, size[0] // 4), max(1, size[1] // 4))
        rgb_small = F.interpolate(rgb.float(), size=small, mode="bilinear", align_corners=False, antialias=True)
        depth_small = None
        if depth_m is not None:
            depth_small = F.interpolate(torch.nan_to_num(depth_m.float(), nan=0.0), size=small, mode="nearest-exact")
        coarse = F.interpolate(scores, size=small, mode="bilinear", align_corners=False, antialias=True)
        refined = refine_scores(coarse, rgb_small, depth_small, cfg.refine_iterations,
                                cfg.refine_sigma_rgb, cfg.refine_sigma_depth)
        scores = F.interpolate(refined, size=size, mode="bilinear", align_corners=False)
        scores = (scores / scores.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-5)) * tags.to(scores)[:, :, None, None]
        if keep is not None:
            scores = scores * keep
    top_fg, top_class = scores.max(dim=1)
    if cfg.background == "constant":
        background = torch.full_like(top_fg, cfg.bg_score)
    else:
        background = (1.0 - top_fg).clamp_min(0.0) ** cfg.alpha
    labels = torch.where(top_fg > background, top_class + 1, torch.zeros_like(top_class))
    uncertain = ((labels > 0) & (top_fg < cfg.fg_threshold)) | ((labels == 0) & (top_fg >= cfg.bg_threshold))
    labels = labels.masked_fill(uncertain, IGNORE_INDEX)
    if plane_prior is not None:
        prior = plane_prior[:, 0].to(labels.device)
        stands_out = torch.where(top_fg >= cfg.object_threshold, top_class + 1, torch.full_like(labels, IGNORE_INDEX))
        labels = torch.where(prior > 0, stands_out, labels).masked_fill(prior < 0, 0)
        if by_part and depth_at_size is not None:
            colour = None
            if by_contrast and rgb is not None:
                colour = F.interpolate(rgb.float(), size=size, mode="bilinear", align_corners=False, antialias=True) \
                    if tuple(rgb.shape[-2:]) != size else rgb
            labels = one_class_per_object(labels, scores, prior > 0, depth_at_size[:, 0].to(labels.device), tags,
                                          colour, part_bank if by_contrast else None, cfg.one_class_per_object,
                                          add_to_bank)
    confidence = torch.where(labels == 0, 1.0 - top_fg, top_fg)
    return labels, confidence
