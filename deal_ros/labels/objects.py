"""One class per object: the pixels of a part that depth separates take one tagged class, not a pixel-wise mix.

Why: where tagged objects stand side by side, each one's CAM also lights up its neighbour, and the pixel-wise
argmax splits an object between classes. Depth separates the objects (deal_ros.depth.surfaces.depth_parts: what
stands out of the support plane, cut at occluding edges), so each part takes the tagged class with the highest
mean score over it. Every tagged object is in view: when a frame has at least as many parts as tags, each tag
first gets its own best part (greedy on the mean scores, best pair first), the other parts their best class.

With a PartBank (deal_ros.labels.part_names), the classes that the contrast between tag patterns can name are
placed first, each on the part that looks like it in the frames that tag it and unlike the frames that do not
(one part per class, best pair first); the CAM decides between the other tags on the other parts.
"""

from __future__ import annotations

import numpy as np
import torch

from deal_ros.depth.surfaces import PART_MIN_AREA, depth_parts
from deal_ros.labels.part_names import PartBank, part_looks

__all__ = ["assign_part_classes", "object_parts", "one_class_per_object", "place_by_contrast", "remember_parts"]


def _pair_off(scores: np.ndarray, tags: list[int], parts: list[int]) -> dict[int, int]:
    """Greedy best pair first on the finite scores (T, P) among `tags` and `parts`: {part: tag}, one each."""
    if not tags or not parts:
        return {}
    sub = scores[np.ix_(tags, parts)]
    order = np.argsort(-np.where(np.isfinite(sub), sub, -np.inf), axis=None, kind="stable")
    free_tags, free_parts, pairs = set(tags), set(parts), {}
    for flat in order:
        t, p = divmod(int(flat), len(parts))
        if not np.isfinite(sub[t, p]):
            break
        tag, part = tags[t], parts[p]
        if tag in free_tags and part in free_parts:
            pairs[part] = tag
            free_tags.discard(tag)
            free_parts.discard(part)
            if not free_tags or not free_parts:
                break
    return pairs


def place_by_contrast(contrast: np.ndarray) -> dict[int, int]:
    """contrast (T, P) as PartBank.scores gives for a frame's tags (NaN: no contrast) -> {part: tag}: each tag with a
    contrast on the part that scores best for it, one part per tag and one tag per part, best pair first."""
    return _pair_off(contrast, list(range(contrast.shape[0])), list(range(contrast.shape[1])))


def assign_part_classes(mean_scores: np.ndarray, placed: dict[int, int] | None = None) -> np.ndarray:
    """mean_scores (T, P): tag t's mean score over part p -> (P,) the tag index each part takes.

    placed: {part: tag} decided already (place_by_contrast); the tags not placed then share the other parts. With at
    least as many of those parts as tags not placed (two or more tags in all), each gets a part of its own first (the
    best remaining pair, in turn); the other parts take their best tag not placed (any tag once every tag is).
    """
    placed = placed or {}
    tags, parts = mean_scores.shape
    open_tags = [t for t in range(tags) if t not in placed.values()]
    free_parts = [p for p in range(parts) if p not in placed]
    candidates = open_tags or list(range(tags))
    choice = np.asarray(candidates)[mean_scores[candidates].argmax(axis=0)]
    for part, tag in placed.items():
        choice[part] = tag
    if tags >= 2 and open_tags and len(free_parts) >= len(open_tags):
        for part, tag in _pair_off(mean_scores, open_tags, free_parts).items():
            choice[part] = tag
    return choice


def object_parts(stands_out: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The objects depth separates in stands_out (H, W) bool with depth (H, W) metres: (parts (H, W) int32, 0 = none,
    cut pixels joined to their nearest side; kept (P,) the ids of the parts of at least PART_MIN_AREA of the frame)."""
    count, parts = depth_parts(stands_out, depth)
    parts = _with_cut_pixels(parts, stands_out, depth)
    area = np.bincount(parts.ravel(), minlength=count)
    kept = np.flatnonzero(area >= PART_MIN_AREA * parts.size)
    return parts, kept[kept > 0]


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


def _placed_then_pixelwise(parts: np.ndarray, kept: np.ndarray, placed: dict[int, int], tagged: np.ndarray,
                           score: np.ndarray) -> np.ndarray:
    """(H, W) class + 1 per pixel (0 = leave it): the placed parts' classes; on the other kept parts, pixel by pixel,
    the best by score (T, H*W) of the tags not placed (their classes `tagged` (T,)); elsewhere 0."""
    part_class = np.zeros(int(parts.max()) + 1, np.int64)
    for part, tag in placed.items():
        part_class[kept[part]] = tagged[tag] + 1
    new = part_class[parts]
    open_tags = [t for t in range(len(tagged)) if t not in placed.values()]
    if open_tags:
        others = np.isin(parts, [k for p, k in enumerate(kept) if p not in placed])
        best_open = np.asarray(open_tags)[score[open_tags].argmax(axis=0)].reshape(parts.shape)
        new = np.where(others, tagged[best_open] + 1, new)
    return new


def _as_colour(rgb: torch.Tensor) -> np.ndarray:
    """rgb (B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 on the host."""
    return (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def remember_parts(bank: PartBank, rgb: torch.Tensor, stands_out: torch.Tensor, depth_m: torch.Tensor,
                   tags: torch.Tensor) -> None:
    """Add the looks of the depth parts of frames rgb (B, 3, H, W) in [0, 1] with stands_out (B, H, W) bool, depth_m
    (B, H, W) metres and tags (B, K) to bank, as one_class_per_object does while it labels: for a bank filled
    before labelling (`deal-ros label` reads the bag twice)."""
    colour = _as_colour(rgb)
    for i in range(rgb.shape[0]):
        parts, kept = object_parts(stands_out[i].cpu().numpy(), depth_m[i].float().cpu().numpy())
        bank.add((tags[i] > 0).cpu().numpy(), part_looks(colour[i], parts, kept))


@torch.no_grad()
def one_class_per_object(labels: torch.Tensor, scores: torch.Tensor, stands_out: torch.Tensor,
                         depth_m: torch.Tensor, tags: torch.Tensor, rgb: torch.Tensor | None = None,
                         bank: PartBank | None = None, per_part: bool = True, add_to_bank: bool = True,
                         ) -> torch.Tensor:
    """Relabel the object pixels of the depth parts by class; where they are and what is ignored stays.

    labels: (B, H, W) int64, 0 = background, k = class k - 1, 255 = ignore; scores: (B, K, H, W) class scores
    (0 for untagged classes); stands_out: (B, H, W) bool, what stands out of the support surface; depth_m:
    (B, H, W) metres at the same size (0 = hole); tags: (B, K). Frames with fewer than two tags are unchanged.
    rgb (B, 3, H, W) in [0, 1] with bank: the classes the contrast names are placed first (place_by_contrast),
    then each frame's parts are added to the bank (with add_to_bank). per_part: every other part takes one class
    (assign_part_classes); False: their pixels take the CAM's best among the tags not placed.
    """
    out = labels.clone()
    num_classes = scores.shape[1]
    colour = _as_colour(rgb) if bank is not None and rgb is not None else None
    for i in range(labels.shape[0]):
        frame_tags = (tags[i] > 0).cpu().numpy()
        tagged = np.flatnonzero(frame_tags)
        if colour is None and len(tagged) < 2:
            continue
        mask, depth = stands_out[i].cpu().numpy(), depth_m[i].float().cpu().numpy()
        parts, kept = object_parts(mask, depth)
        if len(kept) == 0:
            continue
        placed: dict[int, int] = {}
        if colour is not None and bank is not None:
            looks = part_looks(colour[i], parts, kept)
            if len(tagged) >= 2:
                placed = place_by_contrast(bank.scores(frame_tags, looks)[tagged])
            if add_to_bank:
                bank.add(frame_tags, looks)
        if len(tagged) < 2:
            continue
        score = scores[i, tagged].float().cpu().numpy().reshape(len(tagged), -1)  # (T, H*W)
        count = int(parts.max()) + 1
        if per_part:
            area = np.bincount(parts.ravel(), minlength=count)
            sums = np.stack([np.bincount(parts.ravel(), weights=s, minlength=count) for s in score])  # (T, count)
            part_class = np.zeros(count, np.int64)  # 0 = leave the pixel as it is
            part_class[kept] = tagged[assign_part_classes(sums[:, kept] / area[kept], placed)] + 1
            new = part_class[parts]
        elif placed:
            new = _placed_then_pixelwise(parts, kept, placed, tagged, score)
        else:
            continue
        new_t = torch.from_numpy(new).to(labels.device)
        is_object = (labels[i] > 0) & (labels[i] <= num_classes)
        out[i] = torch.where(is_object & (new_t > 0), new_t, labels[i])
    return out
