"""The support plane (table, shelf floor, wall) from depth alone, as a background prior.

Why: a classifier trained from image-level tags can recognise a class from its context (the table
it stands on, the floor beyond) and light up the whole frame; DEAL does not stop that, because a
flat CAM agrees with every non-edge cell. Objects stand out of the surface that supports them, so
pixels on that surface, or behind it (the floor past the table's edge), cannot belong to an object.

No intrinsics are needed: a 3-D plane n . X = d seen by a pinhole camera has inverse depth affine in
the pixel coordinates, 1 / z = a u + b v + c. The plane is found by RANSAC on 1 / z at a coarse grid
(deterministic: a fixed generator seed), refined by least squares on its inliers, and a pixel is
classified by its relative depth residual (z_plane - z) / z_plane.

Flat things lying on the surface that reach the frame's edge (a keyboard, a mat, a sheet of paper, a tray
floor seen past the objects) stand out of the plane by a few millimetres only; with `slab_height` they count
as part of the support surface: background for the labels, as the ground truth of real scenes has them.

One plane is not the whole background in a shelf cell (floor, back and side walls), a bin or in front of
furniture. With `extra_planes`, further planes are fitted, one at a time, to what still stands out. A further plane
is background where it surrounds the scene rather than being an object's face: what meets it lies in front of it (a
wall meets the floor, the side walls and the objects before it; an object's face hides what lies behind it), or,
while most of the frame still stands out, it reaches the frame's edge (furniture, a floor beyond).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deal_ros.depth.surfaces import container_walls, flat_slabs

__all__ = ["SupportPlane", "fit_support_plane"]


@dataclass
class SupportPlane:
    """Per-pixel result at the depth's resolution; every mask is (B, 1, H, W) bool."""

    on_plane: torch.Tensor
    """Within the tolerance of the plane (the table top)."""
    behind: torch.Tensor
    """Farther than the plane by more than the tolerance (floor or wall beyond the table's edge)."""
    in_front: torch.Tensor
    """Nearer than the plane by more than the tolerance: what stands out of the table (objects)."""
    found: torch.Tensor
    """(B,) bool: a plane supported by at least `min_inlier_fraction` of the valid pixels."""

    @property
    def background(self) -> torch.Tensor:
        """On or behind the plane, in images where one was found: (B, 1, H, W) bool."""
        return (self.on_plane | self.behind) & self.found[:, None, None, None]

    @property
    def prior(self) -> torch.Tensor:
        """(B, 1, H, W) int8: -1 = background (on or behind the plane), 1 = stands out of it, 0 = unknown (a hole,
        or no plane found in that image)."""
        found = self.found[:, None, None, None]
        prior = torch.zeros(self.on_plane.shape, dtype=torch.int8, device=self.on_plane.device)
        prior = prior.masked_fill(self.in_front & found, 1)
        return prior.masked_fill(self.background, -1)


def _plane_params(uv1: torch.Tensor, inv: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted least squares of inv ~ uv1 @ p: uv1 (B, N, 3), inv (B, N), weights (B, N) -> p (B, 3)."""
    uv1, inv, w = uv1.double(), inv.double(), weights.double()[..., None]
    lhs = (uv1 * w).transpose(1, 2) @ uv1
    # A ridge relative to the matrix's scale keeps degenerate inlier sets (none, one row of cells) solvable.
    ridge = 1e-9 * lhs.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1.0)
    lhs = lhs + ridge[:, None, None] * torch.eye(3, dtype=lhs.dtype, device=lhs.device)
    rhs = (uv1 * w).transpose(1, 2) @ inv[..., None]
    return torch.linalg.solve(lhs, rhs)[..., 0].to(weights.dtype)


def _ransac_plane(depth: torch.Tensor, tolerance: float, grid: int, hypotheses: int, seed: int,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plane that most valid cells of depth (B, 1, H, W) (0 = hole) fit, on a coarse grid:
    (params (B, 3) of 1 / z = a u + b v + c in centred pixel coordinates, inlier cells (B,), valid cells (B,))."""
    b, _, h, w = depth.shape
    scale = grid / max(h, w)
    gh, gw = max(2, round(h * scale)), max(2, round(w * scale))
    small = F.interpolate(depth, size=(gh, gw), mode="nearest-exact")
    valid = (small > 0).flatten(1)  # (B, N)
    inv = torch.where(valid, 1.0 / small.flatten(1).clamp_min(1e-6), torch.zeros_like(valid, dtype=depth.dtype))
    # Pixel coordinates of the cells in the full image's units, centred and scaled to [-1, 1] (conditioning).
    ys = (torch.arange(gh, device=depth.device, dtype=depth.dtype) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, device=depth.device, dtype=depth.dtype) + 0.5) / gw * 2 - 1
    vv, uu = torch.meshgrid(ys, xs, indexing="ij")
    uv1 = torch.stack([uu.flatten(), vv.flatten(), torch.ones_like(uu.flatten())], -1).expand(b, -1, -1)

    # RANSAC: each hypothesis is the plane through 3 random valid cells. One draw of ranks serves every image, so
    # an image's plane does not depend on its place in the batch or on its batch-mates (live == offline == alone).
    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # valid cells first
    count = valid.sum(-1, keepdim=True).clamp_min(1)  # (B, 1)
    ranks = (torch.rand(1, hypotheses * 3, generator=generator).to(depth.device) * count).long()
    picks = torch.gather(order, 1, ranks.clamp_max(valid.shape[1] - 1)).view(b, hypotheses, 3)
    pts = torch.gather(uv1[:, None].expand(-1, hypotheses, -1, -1), 2, picks[..., None].expand(-1, -1, -1, 3))
    vals = torch.gather(inv[:, None].expand(-1, hypotheses, -1), 2, picks)
    det = torch.linalg.det(pts)
    ok = det.abs() > 1e-6
    safe = torch.where(ok[..., None, None], pts, torch.eye(3, dtype=pts.dtype, device=pts.device))
    params = torch.linalg.solve(safe, vals[..., None])[..., 0]  # (B, Hyp, 3)
    pred = params @ uv1.transpose(1, 2)  # (B, Hyp, N)
    inliers = ((inv[:, None] - pred).abs() <= tolerance * pred.abs()) & valid[:, None]
    score = torch.where(ok, inliers.sum(-1), torch.zeros_like(ok, dtype=torch.long))
    best = score.argmax(-1)  # (B,)
    best_inliers = inliers[torch.arange(b, device=depth.device), best]  # (B, N)
    return _plane_params(uv1, inv, best_inliers.to(depth.dtype)), best_inliers.sum(-1), valid.sum(-1)



def _plane_residual(params: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative residual (z_plane - z) / z_plane of every pixel of depth (B, 1, H, W) to the plane params (B, 3)
    (> 0 = in front of the plane), and the plane's inverse depth there (<= 0: the plane is not in view there)."""
    h, w = depth.shape[-2:]
    ys = (torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5) / w * 2 - 1
    vv, uu = torch.meshgrid(ys, xs, indexing="ij")
    plane_inv = (params[:, 0, None, None] * uu + params[:, 1, None, None] * vv + params[:, 2, None, None])[:, None]
    pixel_inv = 1.0 / depth.clamp_min(1e-6)  # 1 - plane_inv / pixel_inv, as the plane was always classified
    return 1.0 - plane_inv / pixel_inv, plane_inv


EXTRA_PLANE_UNEXPLAINED = 0.4
"""While more than this share of the valid pixels stands out, a plane reaching the frame's edge is a surface."""
EXTRA_PLANE_MIN_SHARE = 0.05
"""A further plane holds at least this share of the valid pixels."""
EXTRA_PLANE_MIN_BORDER = 0.3
"""A further plane that reaches the frame's edge along this share of one side (two-pixel margin) surrounds the scene;"""
EXTRA_PLANE_MAX_OCCLUDING = 0.25
"""so does one whose surroundings (EXTRA_PLANE_RING around it) lie behind its extension on at most this share: a
wall meets what is in front of it (the floor, the side walls, objects), an object's face hides what lies behind."""
EXTRA_PLANE_RING = 0.02
"""Width of those surroundings, as a share of the frame's long side (3 px at 160)."""


def _edge_share(mask: torch.Tensor) -> torch.Tensor:
    """mask (B, 1, H, W) bool -> (B,): the largest share of one side of the frame it touches (two-pixel margin)."""
    sides = (mask[:, 0, :2].any(1), mask[:, 0, -2:].any(1), mask[:, 0, :, :2].any(2), mask[:, 0, :, -2:].any(2))
    return torch.stack([side.float().mean(-1) for side in sides], -1).amax(-1)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """mask (B, 1, H, W) bool grown by `radius` pixels (a square; two separable max-pools)."""
    grown = F.max_pool2d(mask.float(), (1, 2 * radius + 1), stride=1, padding=(0, radius))
    return F.max_pool2d(grown, (2 * radius + 1, 1), stride=1, padding=(radius, 0)) > 0


def _with_extra_planes(depth: torch.Tensor, plane: SupportPlane, tolerance: float, count: int, grid: int,
                       hypotheses: int, seed: int) -> SupportPlane:
    """plane, with up to `count` further planes (EXTRA_PLANE_*) of depth (B, 1, H, W) as background (on_plane).

    Sequential RANSAC, batched: every round fits one plane per image to its pixels not yet explained or set aside;
    a plane too small ends the image's search, one that looks like an object's face is set aside."""
    valid = depth > 0
    valid_count = valid.flatten(1).sum(-1).clamp_min(1)
    found = plane.found.clone()
    background = plane.background.clone()  # all False where the support plane was not found
    set_aside = torch.zeros_like(valid)
    searching = torch.ones_like(found)
    ring_px = max(1, round(EXTRA_PLANE_RING * max(depth.shape[-2:])))
    for _ in range(count):
        if not bool(searching.any()):
            break
        idx = searching.nonzero()[:, 0]  # only the images still searching pay for this round
        image, image_valid, image_count = depth[idx], valid[idx], valid_count[idx]
        standing = image_valid & ~background[idx]
        # Much of the frame stands out: what reaches its edge is a surface too (furniture, a floor beyond).
        unexplained = ~found[idx] | (standing.flatten(1).sum(-1) > EXTRA_PLANE_UNEXPLAINED * image_count)
        rest = torch.where(standing & ~set_aside[idx], image, torch.zeros_like(image))
        params, _, _ = _ransac_plane(rest, tolerance, grid, hypotheses, seed)
        residual, plane_inv = _plane_residual(params, image)
        inliers = (rest > 0) & (residual.abs() <= tolerance) & (plane_inv > 0)
        beyond = image_valid & ((residual < -tolerance) | (plane_inv <= 0))  # behind the plane's extension
        ring = _dilate(inliers, ring_px) & ~inliers & image_valid
        occluding = (ring & beyond).flatten(1).sum(-1) / ring.flatten(1).sum(-1).clamp_min(1)
        large = inliers.flatten(1).sum(-1) >= EXTRA_PLANE_MIN_SHARE * image_count
        surrounds = (occluding <= EXTRA_PLANE_MAX_OCCLUDING) | (
            unexplained & (_edge_share(inliers) >= EXTRA_PLANE_MIN_BORDER))
        accepted, rejected = large & surrounds, large & ~surrounds
        background[idx] |= inliers & accepted[:, None, None, None]
        set_aside[idx] |= inliers & rejected[:, None, None, None]
        found[idx] |= accepted
        searching[idx] = large
    behind = plane.behind & plane.found[:, None, None, None]
    return SupportPlane(on_plane=background & ~behind, behind=behind, in_front=valid & ~background, found=found)


@torch.no_grad()
def fit_support_plane(depth_m: torch.Tensor, tolerance: float = 0.01, grid: int = 48, hypotheses: int = 96,
                      min_inlier_fraction: float = 0.2, seed: int = 0, slab_height: float = 0.0,
                      walls: bool = False, extra_planes: int = 0) -> SupportPlane:
    """Dominant plane of depth_m (B, 1, H, W) metres (0 / NaN = hole).

    tolerance: relative depth residual of an inlier (0.01 = 1 % of the distance: ~5 mm at 0.5 m, above
    RealSense noise, below the height of a flat object such as a tile). grid: the RANSAC grid's long side in
    cells. A plane needs min_inlier_fraction of the valid grid cells; images without one get found = False.
    slab_height: flat_slabs lower than this (relative to the distance; 0 = none) lie on the plane. walls: the
    container_walls around a floor (a tray's, a box's) are background too (behind = False there: they surround).
    extra_planes: at most this many further planes (walls, a shelf's back, furniture) are background too where they
    surround the scene (the module's docstring); found is then True where any plane counts.
    """
    if depth_m.ndim != 4 or depth_m.shape[1] != 1:
        raise ValueError(f"depth_m must be (B, 1, H, W), got {tuple(depth_m.shape)}")
    depth = torch.nan_to_num(depth_m.float(), nan=0.0, posinf=0.0, neginf=0.0).abs()
    params, inlier_cells, valid_cells = _ransac_plane(depth, tolerance, grid, hypotheses, seed)
    found = (inlier_cells >= min_inlier_fraction * valid_cells) & (inlier_cells >= 16)
    residual, plane_inv = _plane_residual(params, depth)
    pixel_valid = depth > 0
    on_plane = pixel_valid & (residual.abs() <= tolerance) & (plane_inv > 0)
    behind = pixel_valid & ((residual < -tolerance) | (plane_inv <= 0))
    in_front = pixel_valid & ~on_plane & ~behind
    if slab_height > 0:
        slabs = flat_slabs(in_front & found[:, None, None, None], residual, depth, slab_height)
        on_plane, in_front = on_plane | slabs, in_front & ~slabs
    if walls:
        rims = container_walls(in_front & found[:, None, None, None], on_plane | behind, depth)
        on_plane, in_front = on_plane | rims, in_front & ~rims
    plane = SupportPlane(on_plane=on_plane, behind=behind, in_front=in_front, found=found)
    if extra_planes > 0:
        plane = _with_extra_planes(depth, plane, tolerance, extra_planes, grid, hypotheses, seed)
    return plane
