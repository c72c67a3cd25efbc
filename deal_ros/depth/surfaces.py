"""What else than the plane belongs to the support surface: flat things on it, the walls of a tray around it.

The support plane (deal_ros.depth.support_plane) takes everything that rises out of it for an object. Two kinds of
background rise too, and both are told apart from objects by their shape in the image, not by their height alone:

- flat slabs: a keyboard, a mat, paper lying on the table and reaching the frame's edge (objects are seen whole,
  or rise well above the table where the frame cuts them);
- container walls: the walls of a tray or box form the outer rim of a region that encloses a floor and holds
  objects; the objects in it are surrounded by that floor instead, or lean on a wall with a body wider than it.

Parts are 4-connected pixels standing out of the plane, cut where neighbouring depths step (an occluding edge).
Computed per image with OpenCV on the CPU (the masks are small: the network's input size).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["container_walls", "depth_parts", "flat_slabs"]

PART_JUMP = 0.03
"""Relative depth step between neighbouring pixels that separates two parts standing out of the plane."""
SLAB_MIN_BORDER = 0.1
"""A flat slab reaches the frame's edge along at least this share of one side (objects are seen whole)."""
PART_MIN_AREA = 0.002
"""Parts smaller than this share of the frame are left as they are (noise, cable ends)."""
SLAB_HEIGHT_QUANTILE = 0.9
"""A slab's height is this quantile of its pixels' heights above the plane (robust to a few noisy pixels)."""


def depth_parts(stands_out: np.ndarray, depth: np.ndarray) -> tuple[int, np.ndarray]:
    """4-connected parts of stands_out (H, W) bool, cut wherever neighbouring depths step by > PART_JUMP:
    (count, labels (H, W) int32 with 0 = not a part, including the cut pixels)."""
    near_x = np.minimum(depth[:, 1:], depth[:, :-1])
    near_y = np.minimum(depth[1:], depth[:-1])
    cut = np.zeros_like(stands_out)
    cut[:, :-1] |= (np.abs(np.diff(depth, axis=1)) > PART_JUMP * near_x) | (near_x <= 0)
    cut[:-1] |= (np.abs(np.diff(depth, axis=0)) > PART_JUMP * near_y) | (near_y <= 0)
    count, parts = cv2.connectedComponents((stands_out & ~cut).astype(np.uint8), connectivity=4)
    return count, parts


def _edge_reach(parts: np.ndarray, count: int) -> np.ndarray:
    """(count,) per part of parts (H, W): the largest share of one side of the frame it touches (two-pixel margin)."""
    shares = []
    for margin in (parts[:2], parts[-2:], parts[:, :2].T, parts[:, -2:].T):
        length = margin.shape[1]
        cells = np.unique(margin * length + np.arange(length))  # each (part, position along the side) once
        shares.append(np.bincount(cells // length, minlength=count) / length)
    reach = np.max(shares, axis=0)
    reach[0] = 0.0
    return reach


def flat_slabs(in_front: torch.Tensor, height: torch.Tensor, depth_m: torch.Tensor, max_height: float,
               ) -> torch.Tensor:
    """Parts of in_front (B, 1, H, W) bool that reach the frame's edge and rise less than max_height above the
    plane (height: (B, 1, H, W), relative, (z_plane - z) / z_plane): (B, 1, H, W) bool."""
    slabs = torch.zeros_like(in_front)
    b, _, h, w = in_front.shape
    grow = np.ones((3, 3), np.uint8)
    for i in range(b):
        stands_out = in_front[i, 0].cpu().numpy()
        depth = depth_m[i, 0].cpu().numpy()
        rise = height[i, 0].cpu().numpy()
        count, parts = depth_parts(stands_out, depth)
        area = np.bincount(parts.ravel(), minlength=count)
        reach = _edge_reach(parts, count)
        candidates = np.flatnonzero((area >= PART_MIN_AREA * h * w) & (reach >= SLAB_MIN_BORDER))
        flat = [k for k in candidates if np.quantile(rise[parts == k], SLAB_HEIGHT_QUANTILE) < max_height]
        found = np.isin(parts, flat)
        # The cut pixels along a slab's outline go with it.
        found |= cv2.dilate(found.astype(np.uint8), grow).astype(bool) & stands_out & (parts == 0)
        slabs[i, 0] = torch.from_numpy(found)
    return slabs


WALL_MIN_FLOOR = 0.01
"""A container's floor: background pixels enclosed by what stands out, at least this share of the frame."""
WALL_MIN_FLOOR_SHARE = 0.05
"""A container's floor is also at least this share of the region that encloses it (a tray's floor is seen between
its objects; what the folds of a cloth or clutter in front of furniture encloses is a sliver of it)."""
WALL_RIM_SHARE = 0.3
"""A part is a wall when at least this share of its outline lies on the enclosing region's outer rim."""
_RIM_PX = 4
"""Width of that rim, in pixels inside the region's outline."""
WALL_HALF_WIDTH = 0.02
"""Half the width of a tray's wall seen from above, as a share of the frame's long side (3 px at 160): a disk of
this radius fits in an object's body, not in a wall."""


def _holes(mask: np.ndarray) -> np.ndarray:
    """Pixels of ~mask (H, W) that the frame's outside cannot reach: what mask encloses."""
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), (2,))
    return flood[1:-1, 1:-1] == 0


def _on_rim(part: np.ndarray, rim: np.ndarray, grow: np.ndarray) -> bool:
    """Whether WALL_RIM_SHARE of the outline of part (H, W) bool lies on rim (H, W) bool."""
    outline = part & ~cv2.erode(part.astype(np.uint8), grow).astype(bool)
    return bool((outline & rim).sum() >= WALL_RIM_SHARE * outline.sum())


def _wall_of(part: np.ndarray, rim: np.ndarray, floor: np.ndarray, disk: np.ndarray, grow: np.ndarray) -> np.ndarray:
    """The wall pixels of part (H, W) bool, which touches the rim (H, W) bool of a region around floor (H, W) bool.

    An object leaning on a wall joins the wall's part where depth does not step between them. Its body is what disk,
    wider than a wall, fits in (the part's opening) that neither encloses floor (a wall's ring does) nor lies on the
    rim; the rest of the part is wall where it lies on the rim, else only its thin pieces that reach the rim are."""
    h, w = part.shape
    thick = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_OPEN, disk).astype(bool)
    bodies = np.zeros_like(part)
    count, pieces = cv2.connectedComponents(thick.astype(np.uint8), connectivity=8)
    for k in range(1, count):
        piece = pieces == k
        if (_holes(piece) & floor).sum() < PART_MIN_AREA * h * w and not _on_rim(piece, rim, grow):
            bodies |= piece
    rest = part & ~bodies
    if _on_rim(rest, rim, grow):
        return rest
    count, pieces = cv2.connectedComponents((rest & ~thick).astype(np.uint8), connectivity=8)
    reach = np.unique(pieces[rim & (pieces > 0)])
    return np.isin(pieces, reach) & (pieces > 0)


def _holds_objects(inside: np.ndarray, rim: np.ndarray) -> bool:
    """Whether inside (H, W) bool, what stands out in a region besides its walls, has a part of PART_MIN_AREA clear of
    the rim (H, W) bool: a tray holds objects, while a ring or a handle seen from above encloses the table alone."""
    _, pieces = cv2.connectedComponents(inside.astype(np.uint8), connectivity=8)
    large = np.bincount(pieces.ravel()) >= PART_MIN_AREA * inside.size
    large[0] = False  # not a piece
    large[pieces[rim]] = False
    return bool(large.any())


def container_walls(in_front: torch.Tensor, background: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Parts of in_front (B, 1, H, W) bool that make up the outer rim of a region enclosing a floor of background
    (B, 1, H, W) bool pixels and holding objects (the walls of a tray around its floor): (B, 1, H, W) bool."""
    walls = torch.zeros_like(in_front)
    b, _, h, w = in_front.shape
    grow = np.ones((3, 3), np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(1, round(WALL_HALF_WIDTH * max(h, w))) + 1,) * 2)
    for i in range(b):
        stands_out = in_front[i, 0].cpu().numpy()
        floor_mask = background[i, 0].cpu().numpy()
        # Bridge the one- and two-pixel gaps that depth holes leave in a wall.
        closed = cv2.dilate(stands_out.astype(np.uint8), grow, iterations=2).astype(bool)
        floor = _holes(closed) & floor_mask
        if floor.sum() < WALL_MIN_FLOOR * h * w:
            continue
        _, parts = depth_parts(stands_out, depth_m[i, 0].cpu().numpy())
        regions_count, regions = cv2.connectedComponents((closed | _holes(closed)).astype(np.uint8), connectivity=8)
        found = np.zeros((h, w), bool)
        for r in range(1, regions_count):
            region = regions == r
            if (floor & region).sum() < max(WALL_MIN_FLOOR * h * w, WALL_MIN_FLOOR_SHARE * region.sum()):
                continue
            rim = cv2.dilate((~region).astype(np.uint8), grow, iterations=_RIM_PX).astype(bool) & region
            wall = np.zeros((h, w), bool)
            for k in np.unique(parts[rim & stands_out]):
                if k > 0:
                    wall |= _wall_of(parts == k, rim, floor & region, disk, grow)
            if _holds_objects(region & stands_out & ~wall & (parts > 0), rim):
                found |= wall
        found |= cv2.dilate(found.astype(np.uint8), grow).astype(bool) & stands_out & (parts == 0)
        walls[i, 0] = torch.from_numpy(found)
    return walls
