"""Scene families beyond one table: clutter, bins, shelf cells and scenes without a support plane.

Why: the support-plane prior and DEAL were tuned on close-ups of one or two objects on a table; robots label
objects in clutter, in bins, on shelves and in a hand. Each family here builds its room (structure primitives that
are background in the ground truth: tray walls, shelf boards, a cloth, furniture), places objects (touching, in
contact clusters, where the family asks for it) and rescales them until each covers about the family's share of
the frame. The camera, the sensor model, the shading and the objects are the close-ups' own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deal_ros.lab.synthetic.frame import SURFACE_OBJECT0
from deal_ros.lab.synthetic.primitives import Box, Heightfield, Primitive
from deal_ros.lab.synthetic.render import camera_rays, render_geometry, render_room
from deal_ros.lab.synthetic.scene import Scene, SceneObject, hsv, sample_object, sample_scene

Region = tuple[tuple[float, float], tuple[float, float]]
"""Where objects may stand on the plane z = 0: (x_min, x_max), (y_min, y_max) in world metres."""

NO_TABLE = (math.inf, -math.inf)
"""An empty table_x: the frame has no table top (objects held in view, or on a cloth that replaces it)."""


@dataclass(frozen=True)
class Layout:
    """How a family's frames are built: camera, object sizes and contact, and the room around the objects."""

    camera_distance_m: tuple[float, float]
    elevation_deg: tuple[float, float]
    object_cover: tuple[float, float]
    """Target mean fraction of the frame one object covers."""
    min_cover: float
    """Objects that cover less of the frame are left out (too small to be tagged)."""
    touching: float
    """Probability that an object is placed in contact with one already placed."""
    build_room: Callable[[np.random.Generator, Scene], Region]


def _structure(scene: Scene, part: Primitive, colour: np.ndarray) -> None:
    scene.structure.append(part)
    scene.structure_colours.append(colour)


def _grey(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.85))


def _table_room(rng: np.random.Generator, scene: Scene) -> Region:
    """Table clutter: the table top as it is."""
    return (scene.table_x[0] + 0.05, scene.table_x[1] - 0.05), (scene.cam[1] + 0.1, scene.table_y[1] - 0.05)


def _bin_room(rng: np.random.Generator, scene: Scene) -> Region:
    """A tray or box on the table: four walls 4-15 cm high, vertical or leaning outward up to 35 degrees."""
    cx, cy = rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.06)
    half_x, half_y = rng.uniform(0.1, 0.2), rng.uniform(0.08, 0.15)
    wall_h = rng.uniform(0.04, 0.15)
    lean = 0.0 if rng.random() < 0.35 else math.radians(rng.uniform(10.0, 35.0))
    thick = rng.uniform(0.004, 0.012)
    colour = _grey(rng)
    for yaw, half_len, offset in ((0.0, half_x, half_y), (math.pi, half_x, half_y),
                                  (-math.pi / 2, half_y, half_x), (math.pi / 2, half_y, half_x)):
        outward = np.array([-math.sin(yaw), math.cos(yaw)])  # the wall's local y axis
        slant_h = wall_h / math.cos(lean)
        reach = wall_h * math.tan(lean)  # how far the top edge leans out
        centre_xy = np.array([cx, cy]) + outward * (offset + thick / 2 + reach / 2)
        half = np.array([half_len + reach + thick, thick / 2, slant_h / 2])
        _structure(scene, Box(np.array([*centre_xy, wall_h / 2]), half, yaw, tilt=-lean), colour)
    floor = Box(np.array([cx, cy, 0.001 - thick / 2]), np.array([half_x, half_y, thick / 2]), 0.0)
    _structure(scene, floor, colour * rng.uniform(0.7, 1.0))  # 1 mm above the table: objects stand on it
    return (cx - half_x, cx + half_x), (cy - half_y, cy + half_y)


def _shelf_room(rng: np.random.Generator, scene: Scene) -> Region:
    """A shelf cell seen from the front: its floor board (the 'table'), back wall, side walls, top board and a
    front lip 1.5-4 cm high that hides the objects' feet; the room's floor and wall beyond the cell."""
    cx = rng.uniform(-0.05, 0.05)
    half_w, depth, height = rng.uniform(0.18, 0.32), rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.35)
    front = scene.cam[1] + 0.25 + rng.uniform(0.0, 0.1)
    back = front + depth
    board = rng.uniform(0.015, 0.03)
    lip_h = rng.uniform(0.015, 0.04)
    colour = _grey(rng)
    scene.table_x, scene.table_y = (cx - half_w, cx + half_w), (front, back)
    mid_y = (front + back) / 2
    parts = [
        Box(np.array([cx, back + board / 2, height / 2]), np.array([half_w + board, board / 2, height / 2]), 0.0),
        Box(np.array([cx - half_w - board / 2, mid_y, height / 2]), np.array([board / 2, depth / 2, height / 2]), 0.0),
        Box(np.array([cx + half_w + board / 2, mid_y, height / 2]), np.array([board / 2, depth / 2, height / 2]), 0.0),
        Box(np.array([cx, mid_y, height + board / 2]), np.array([half_w + board, depth / 2, board / 2]), 0.0),
        Box(np.array([cx, mid_y, -board / 2 - 0.001]), np.array([half_w + board, depth / 2, board / 2]), 0.0),
        Box(np.array([cx, front + 0.005, lip_h / 2]), np.array([half_w, 0.005, lip_h / 2]), 0.0),
    ]
    for part in parts:
        _structure(scene, part, colour * rng.uniform(0.85, 1.1))
    return (cx - half_w + 0.02, cx + half_w - 0.02), (front + 0.03, back - 0.02)


def _no_plane_room(rng: np.random.Generator, scene: Scene) -> Region:
    """No dominant plane: objects held in view in front of furniture at 0.4-2 m behind them (no table), or on a
    cloth draped in folds 1.5-4 cm high that replaces the table top."""
    target = np.array([0.0, scene.cam[1] + 0.45, 0.0])
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(8, 14))):
            half = rng.uniform(0.08, 0.35, size=3)
            centre = np.array([rng.uniform(-1.0, 1.0), target[1] + rng.uniform(0.4, 2.0),
                               scene.floor_z + rng.uniform(0.0, 1.2)])
            _structure(scene, Box(centre, half, rng.uniform(0, math.pi)), _grey(rng))
    else:
        waves = np.stack([rng.uniform(-1, 1, 4), rng.uniform(-1, 1, 4), rng.uniform(0, 2 * math.pi, 4)], -1)
        waves[:, :2] *= (2 * math.pi / rng.uniform(0.08, 0.25, 4) / np.linalg.norm(waves[:, :2], axis=1))[:, None]
        _structure(scene, Heightfield(scene.table_x, scene.table_y, rng.uniform(0.015, 0.04), waves),
                   hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.8)))
    scene.table_x = NO_TABLE
    return (-0.35, 0.35), (scene.cam[1] + 0.2, target[1] + 0.25)


LAYOUTS: dict[str, Layout] = {
    "clutter": Layout((0.45, 0.9), (35.0, 65.0), (0.005, 0.03), 0.003, 0.8, _table_room),
    "bin": Layout((0.45, 0.75), (50.0, 75.0), (0.015, 0.06), 0.005, 0.9, _bin_room),
    "shelf": Layout((0.5, 0.8), (8.0, 28.0), (0.02, 0.08), 0.005, 0.6, _shelf_room),
    "no_plane": Layout((0.4, 0.7), (10.0, 45.0), (0.03, 0.12), 0.01, 0.5, _no_plane_room),
}
"""The families that are not close-ups or the plain tabletop, by name."""


def _visible_point(rng: np.random.Generator, scene: Scene, height: int, width: int) -> np.ndarray | None:
    """Where a random pixel's ray meets the plane z = 0 (None when it looks above the horizon)."""
    f, cx, cy = scene.k[0, 0], scene.k[0, 2], scene.k[1, 2]
    u, v = rng.uniform(0.15, 0.85) * width, rng.uniform(0.2, 0.9) * height
    ray = scene.rot @ np.array([(u - cx) / f, (v - cy) / f, 1.0])
    if ray[2] >= -1e-3:
        return None
    return scene.cam[:2] + ray[:2] * (-scene.cam[2] / ray[2])


def place_in_contact(rng: np.random.Generator, scene: Scene, labels: list[int], height: int, width: int,
                     num_classes: int, scale: float, styles: Sequence[tuple[str, str]], region: Region,
                     touching: float) -> list[SceneObject]:
    """Objects of `labels` standing in `region` on z = 0: with probability `touching` next to one already placed
    (footprints 0-20 % into each other: in contact), else at a free visible spot. One that finds no place in 40
    tries is left out."""
    objects: list[SceneObject] = []
    (x0, x1), (y0, y1) = region
    for label in labels:
        contact = bool(objects) and rng.random() < touching
        for _ in range(40):
            draw = int(rng.integers(2**31))  # the same draw gives the same object wherever it is built
            if contact:
                other = objects[int(rng.integers(len(objects)))]
                size = sample_object(np.random.default_rng(draw), label, num_classes, np.zeros(2), scale, styles)
                reach = (size.footprint_m + other.footprint_m) * rng.uniform(0.8, 1.0)
                angle = rng.uniform(0, 2 * math.pi)
                xy = other.parts[0].bound()[0][:2] + reach * np.array([math.cos(angle), math.sin(angle)])
            else:
                point = _visible_point(rng, scene, height, width)
                if point is None:
                    continue
                xy = point
            obj = sample_object(np.random.default_rng(draw), label, num_classes, xy, scale, styles)
            margin = obj.footprint_m * 0.8
            inside = x0 + margin < xy[0] < x1 - margin and y0 + margin < xy[1] < y1 - margin
            apart = all(np.hypot(*(xy - o.parts[0].bound()[0][:2])) > 0.75 * (obj.footprint_m + o.footprint_m)
                        for o in objects)
            if inside and apart:
                objects.append(obj)
                break
    return objects


def render_family_frame(
    rng: np.random.Generator, labels: list[int], height: int, width: int, num_classes: int,
    styles: Sequence[tuple[str, str]], layout: Layout,
) -> tuple[Scene, list[SceneObject], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a scene, build the family's room, place the objects and rescale them (6 tries) until one covers
    about U(object_cover) of the frame; objects that stay under min_cover are left out."""
    scene = sample_scene(rng, height, width, num_classes, layout.camera_distance_m, layout.elevation_deg)
    region = layout.build_room(rng, scene)
    dirs = camera_rays(scene, height, width)
    room = render_room(scene, dirs)
    target = rng.uniform(*layout.object_cover)
    scale = 1.0
    best: tuple[float, list[SceneObject], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    for _ in range(6):
        objects = place_in_contact(rng, scene, labels, height, width, num_classes, scale, styles, region,
                                   layout.touching)
        rendered = render_geometry(room, scene, objects, dirs, height, width)
        counts = np.bincount(rendered[1], minlength=256)[SURFACE_OBJECT0:SURFACE_OBJECT0 + len(objects)]
        cover = float(counts.mean()) / (height * width) if objects else 0.0
        error = abs(cover / target - 1.0) + (len(labels) - len(objects))
        if best is None or error < best[0]:
            best = (error, objects, rendered)
        if abs(cover / target - 1.0) < 0.2 and len(objects) == len(labels):
            break
        scale *= float(np.clip(math.sqrt(target / max(cover, 1e-4)), 0.5, 2.0))
    assert best is not None
    _, objects, (t, surf, is_wall) = best
    counts = np.bincount(surf, minlength=256)[SURFACE_OBJECT0:SURFACE_OBJECT0 + len(objects)]
    if (counts < layout.min_cover * height * width).any():
        objects = [o for o, c in zip(objects, counts, strict=True) if c >= layout.min_cover * height * width]
        t, surf, is_wall = render_geometry(room, scene, objects, dirs, height, width)
    return scene, objects, dirs, t, surf, is_wall
