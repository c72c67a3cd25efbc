"""One class per object: the pixels of a part that depth separates take one tagged class, not a pixel-wise mix.

Why: where tagged objects stand side by side, each one's CAM also lights up its neighbour, and the pixel-wise
argmax splits an object between classes. Depth separates the objects (deal_ros.depth.surfaces.depth_parts: what
stands out of the support plane, cut at occluding edges), so each part takes the tagged class with the highest
mean score over it. Every tagged object is in view: when a frame has at least as many parts as tags, each tag
first gets its own best part (greedy on the mean scores, best pair first), the other parts their best class.
"""

from __future__ import annotations

import numpy as np
import torch

from deal_ros.depth.surfaces import PART_MIN_AREA, depth_parts

__all__ = ["assign_part_classes", "one_class_per_object"]


def assign_part_classes(mean_scores: np.ndarray) -> np.ndarray:
    """mean_scores (T, P): tag t's mean score over part p -> (P,) the tag index each part takes.

    With P >= T >= 2 every tag gets a part of its own first (the best remaining pair, in turn)."""
    tags, parts = mean_scores.shape
    choice = mean_scores.argmax(axis=0)
    if parts >= tags >= 2:
        free_tags, free_parts = set(range(tags)), set(range(parts))
        for flat in np.argsort(-mean_scores, axis=None, kind="stable"):
            tag, part = divmod(int(flat), parts)
            if tag in free_tags and part in free_parts:
                choice[part] = tag
                free_tags.discard(tag)
                free_parts.discard(part)
                if not free_tags:
                    break
    return choice


def _with_cut_pixels(parts: np.ndarray, stands_out: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """parts (H, W) with each cut pixel (standing out, part 0: on an occluding edge) joined to the 8-neighbour part
    nearest to it in depth (the edge belongs to the side it was measured on)."""
    h, w = parts.shape
    padded_parts = np.pad(parts, 1)
    padded_depth = np.pad(depth, 1, constant_values=np.inf)
    best = np.full((h, w), np.inf)
    joined = parts.copy()
    cut = stands_out & (parts == 0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            near = padded_parts[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]
            gap = np.abs(padded_depth[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] - depth)
            better = cut & (near > 0) & (gap < best)
            joined[better], best[better] = near[better], gap[better]
    return joined


@torch.no_grad()
def one_class_per_object(labels: torch.Tensor, scores: torch.Tensor, stands_out: torch.Tensor,
                         depth_m: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Relabel each depth part's object pixels with one class; where they are and what is ignored stays.

    labels: (B, H, W) int64, 0 = background, k = class k - 1, 255 = ignore; scores: (B, K, H, W) class scores
    (0 for untagged classes); stands_out: (B, H, W) bool, what stands out of the support surface; depth_m:
    (B, H, W) metres at the same size (0 = hole); tags: (B, K). Frames with fewer than two tags are unchanged.
    """
    out = labels.clone()
    num_classes = scores.shape[1]
    min_area = PART_MIN_AREA * labels.shape[-2] * labels.shape[-1]
    for i in range(labels.shape[0]):
        tagged = torch.nonzero(tags[i] > 0).flatten().cpu().numpy()
        if len(tagged) < 2:
            continue
        mask, depth = stands_out[i].cpu().numpy(), depth_m[i].float().cpu().numpy()
        count, parts = depth_parts(mask, depth)
        parts = _with_cut_pixels(parts, mask, depth)
        area = np.bincount(parts.ravel(), minlength=count)
        kept = np.flatnonzero(area >= min_area)
        kept = kept[kept > 0]
        if len(kept) == 0:
            continue
        score = scores[i, tagged].float().cpu().numpy().reshape(len(tagged), -1)  # (T, H*W)
        sums = np.stack([np.bincount(parts.ravel(), weights=s, minlength=count) for s in score])  # (T, count)
        choice = assign_part_classes(sums[:, kept] / area[kept])
        part_class = np.zeros(count, np.int64)  # 0 = leave the pixel as it is
        part_class[kept] = tagged[choice] + 1
        new = torch.from_numpy(part_class[parts]).to(labels.device)
        is_object = (labels[i] > 0) & (labels[i] <= num_classes)
        out[i] = torch.where(is_object & (new > 0), new, labels[i])
    return out
