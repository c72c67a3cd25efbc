"""Geometry of one frame: the room's and the objects' z-buffer, and placing objects until they are visible."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deal_ros.lab.synthetic.frame import SURFACE_BACKGROUND, SURFACE_OBJECT0, SURFACE_STRUCTURE, SURFACE_TABLE
from deal_ros.lab.synthetic.primitives import EPS_T, MISS, Primitive
from deal_ros.lab.synthetic.scene import Scene, SceneObject, place_objects, sample_scene


def _background_t(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Far background: floor (z = floor_z) or wall (y = wall_y), whichever is hit first."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = (scene.floor_z - o[2]) / d[:, 2]
        tw = (scene.wall_y - o[1]) / d[:, 1]
    tf = np.where(tf > 0, tf, MISS)
    tw = np.where(tw > 0, tw, MISS)
    is_wall = tw < tf
    t = np.minimum(np.minimum(tf, tw), 6.0)
    return t, is_wall


def _table_t(scene: Scene, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[..., 2] / d[:, 2]
    p = o + t[:, None] * d
    inside = (
        (t > EPS_T)
        & (p[:, 0] >= scene.table_x[0])
        & (p[:, 0] <= scene.table_x[1])
        & (p[:, 1] >= scene.table_y[0])
        & (p[:, 1] <= scene.table_y[1])
    )
    return np.where(inside, t, MISS)


def _pixel_window(scene: Scene, part: Primitive, height: int, width: int) -> np.ndarray | None:
    """Flat indices of the pixels that can see `part` (its projected bounding sphere), or None = all."""
    centre, radius = part.bound()
    pc = scene.rot.T @ (centre - scene.cam)
    if pc[2] <= radius * 1.05:
        return None
    f, cx, cy = scene.k[0, 0], scene.k[0, 2], scene.k[1, 2]
    rad = f * radius / (pc[2] - radius) + 2.0
    u, v = f * pc[0] / pc[2] + cx, f * pc[1] / pc[2] + cy
    x0, x1 = max(int(u - rad), 0), min(int(u + rad) + 1, width)
    y0, y1 = max(int(v - rad), 0), min(int(v + rad) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return np.zeros(0, np.int64)
    rows = np.arange(y0, y1)[:, None] * width
    return (rows + np.arange(x0, x1)[None, :]).ravel()


def render_room(scene: Scene, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer of the room and its structure without objects: depth t (N,), surface id (N,) uint8, is-wall flag
    (N,)."""
    t, is_wall = _background_t(scene, scene.cam, dirs)
    surf = np.full(t.shape, SURFACE_BACKGROUND, np.uint8)
    t_tab = _table_t(scene, scene.cam, dirs)
    closer = t_tab < t
    t[closer], surf[closer] = t_tab[closer], SURFACE_TABLE
    for part in scene.structure:
        tp = part.intersect(scene.cam, dirs)
        closer = tp < t
        t[closer], surf[closer] = tp[closer], SURFACE_STRUCTURE
    return t, surf, is_wall


def render_geometry(
    room: tuple[np.ndarray, np.ndarray, np.ndarray],
    scene: Scene,
    objects: list[SceneObject],
    dirs: np.ndarray,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer with objects added to the room: depth t (N,), surface id (N,) uint8, is-wall flag (N,)."""
    t, surf, is_wall = room[0].copy(), room[1].copy(), room[2]
    for i, obj in enumerate(objects):
        for part in obj.parts:
            idx = _pixel_window(scene, part, height, width)
            if idx is None:
                idx = np.arange(len(t))
            tp = part.intersect(scene.cam, dirs[idx])
            closer = tp < t[idx]
            t[idx[closer]], surf[idx[closer]] = tp[closer], SURFACE_OBJECT0 + i
    return t, surf, is_wall


def camera_rays(scene: Scene, height: int, width: int) -> np.ndarray:
    """World directions (H*W, 3) of the pixels' rays, row-major; their camera z component is 1, so t is the
    camera depth."""
    kinv = np.linalg.inv(scene.k)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([jj.ravel(), ii.ravel(), np.ones(height * width)], -1)
    return (pix @ kinv.T) @ scene.rot.T


def render_frame(
    rng: np.random.Generator, labels: list[int], height: int, width: int, num_classes: int,
    camera_distance_m: tuple[float, float],
    styles: Sequence[tuple[str, str]],
    coverage: tuple[float, float] | None,
) -> tuple[Scene, list[SceneObject], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a scene and place the objects; with `coverage` (lo, hi), the objects are rescaled until together
    they cover about a fraction U(lo, hi) of the image (the close-up regime)."""
    scene = sample_scene(rng, height, width, num_classes, camera_distance_m)
    dirs = camera_rays(scene, height, width)
    min_px = 0.01 * height * width
    room = render_room(scene, dirs)
    best: tuple | None = None
    for attempt in range(10):
        scale = 1.0 if attempt < 5 else 1.3
        objects = place_objects(rng, scene, labels, height, width, num_classes, scale, styles)
        t, surf, is_wall = render_geometry(room, scene, objects, dirs, height, width)
        counts = np.bincount(surf, minlength=SURFACE_OBJECT0 + len(objects))[SURFACE_OBJECT0:]
        ok = counts >= min_px
        if len(objects) == len(labels) and ok.all():
            best = (objects, t, surf, is_wall)
            break
        if best is None or ok.sum() > sum(np.bincount(best[2])[SURFACE_OBJECT0:] >= min_px):
            best = (objects, t, surf, is_wall)
    assert best is not None
    objects, t, surf, is_wall = best
    counts = np.bincount(surf, minlength=SURFACE_OBJECT0 + len(objects))[SURFACE_OBJECT0:]
    if (counts < min_px).any():  # drop objects that stay too small to be tagged, and re-render
        objects = [o for o, c in zip(objects, counts, strict=True) if c >= min_px]
        t, surf, is_wall = render_geometry(room, scene, objects, dirs, height, width)
    if coverage is not None and objects:
        target = rng.uniform(*coverage)
        scale = 1.0
        chosen = (objects, t, surf, is_wall)
        error = abs(float((surf >= SURFACE_OBJECT0).mean()) / target - 1.0)
        for _ in range(5):
            if error < 0.2:
                break
            covered = float((chosen[2] >= SURFACE_OBJECT0).mean())
            scale *= float(np.clip(math.sqrt(target / max(covered, 1e-3)), 0.4, 2.5))
            placed = place_objects(rng, scene, labels, height, width, num_classes, scale, styles)
            if len(placed) < len(objects):
                continue  # the larger objects no longer fit on the table
            rendered = render_geometry(room, scene, placed, dirs, height, width)
            new_error = abs(float((rendered[1] >= SURFACE_OBJECT0).mean()) / target - 1.0)
            if new_error < error:  # keep the placement closest to the target coverage
                chosen, error = (placed, *rendered), new_error
        objects, t, surf, is_wall = chosen
    return scene, objects, dirs, t, surf, is_wall
