"""Scene sampling: camera pose and intrinsics, table, room and light, then objects' shapes, looks and places.

Every random draw happens here in a fixed order per frame, which is what keeps frames deterministic per seed.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deal_ros.lab.synthetic.primitives import Box, Cylinder, Primitive, Ring, Sphere


@dataclass
class Appearance:
    """An object's look: two colours mixed by a texture pattern, and how glossy it is."""

    colour_a: np.ndarray  # (3,) float RGB in [0, 1]
    colour_b: np.ndarray
    texture: str
    period_m: float
    phase: float
    gloss: float


@dataclass
class SceneObject:
    """One object on the table: its class, the primitives it is made of, its look and footprint."""

    label: int
    parts: list[Primitive]
    look: Appearance
    footprint_m: float  # radius of the footprint circle on the table


def hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """RGB (3,) in [0, 1] of a hue in degrees and a saturation and value (clipped to [0, 1])."""
    s, v = min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v))


def _look_at(cam: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """Rotation camera -> world (columns = camera x, y, z axes in world coordinates)."""
    z = target - cam
    z /= np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    cr, sr = math.cos(roll), math.sin(roll)
    x, y = cr * x + sr * y, -sr * x + cr * y
    return np.stack([x, y, z], axis=1)


@dataclass
class Scene:
    """Everything of a frame but the objects: camera, table, room, light and the table's look."""

    cam: np.ndarray  # (3,) camera centre, world
    rot: np.ndarray  # (3, 3) camera -> world
    k: np.ndarray  # (3, 3) intrinsics
    table_x: tuple[float, float]
    table_y: tuple[float, float]
    floor_z: float
    wall_y: float
    light: np.ndarray  # (3,) unit vector towards the light
    ambient: float
    table_kind: str
    table_a: np.ndarray
    table_b: np.ndarray
    grain_dir: float
    patches: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, str]]  # centre, half, yaw, colour, texture
    floor_colour: np.ndarray
    wall_colour: np.ndarray
    structure: list[Primitive] = field(default_factory=list)
    """What surrounds the objects and is not one (tray walls, shelf boards, a cloth, furniture): background."""
    structure_colours: list[np.ndarray] = field(default_factory=list)
    """(3,) RGB of each structure part."""


def _class_hue(label: int, num_classes: int) -> float:
    return 360.0 * (label - 1) / max(num_classes, 1) + 5.0


def sample_scene(rng: np.random.Generator, height: int, width: int, num_classes: int,
                 camera_distance_m: tuple[float, float], elevation_deg: tuple[float, float] = (32.0, 62.0)) -> Scene:
    """A robot's view of a table: camera camera_distance_m from it, elevation_deg above the table's plane, often with
    its far edge and the floor or wall behind in view (the largest depth jump), and printed distractors in the
    objects' hues."""
    hfov = math.radians(rng.uniform(58.0, 70.0))
    f = (width / 2.0) / math.tan(hfov / 2.0)
    k = np.array(
        [
            [f, 0.0, (width - 1) / 2.0 + rng.uniform(-2, 2)],
            [0.0, f, (height - 1) / 2.0 + rng.uniform(-2, 2)],
            [0.0, 0.0, 1.0],
        ]
    )
    dist = rng.uniform(*camera_distance_m)  # along the optical axis to the table
    elev = math.radians(rng.uniform(*elevation_deg))
    az = math.radians(rng.uniform(-15.0, 15.0))
    target = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0.0])
    hdir = np.array([math.sin(az), math.cos(az), 0.0])
    cam = target - dist * math.cos(elev) * hdir + np.array([0.0, 0.0, dist * math.sin(elev)])
    rot = _look_at(cam, target, math.radians(rng.uniform(-4.0, 4.0)))

    # How far along +y the top row of the image reaches on the table plane (centre column).
    ray_top = rot @ np.array([0.0, (0 - k[1, 2]) / f, 1.0])
    y_reach = cam[1] + ray_top[1] * (-cam[2] / ray_top[2]) if ray_top[2] < -1e-3 else cam[1] + 10.0
    y_reach = min(y_reach, target[1] + 3.0)
    edge_visible = rng.random() < 0.7
    if edge_visible:
        y_far = target[1] + rng.uniform(0.3, 0.8) * (y_reach - target[1])
    else:
        y_far = y_reach + rng.uniform(0.2, 0.6)
    half_w = rng.uniform(0.6, 1.0)
    x_off = rng.uniform(-0.2, 0.2)
    table_x = (x_off - half_w, x_off + half_w)
    table_y = (cam[1] - 1.0, y_far)
    floor_z = -rng.uniform(0.70, 0.78)
    wall_y = max(y_far + rng.uniform(0.6, 1.8), cam[1] + rng.uniform(2.2, 3.6))

    light_el = math.radians(rng.uniform(45.0, 80.0))
    light_az = rng.uniform(0, 2 * math.pi)
    light = np.array(
        [math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az), math.sin(light_el)]
    )

    table_kind = str(rng.choice(["wood", "laminate", "cloth"]))
    if table_kind == "wood":
        base = hsv(rng.uniform(20, 40), rng.uniform(0.35, 0.6), rng.uniform(0.45, 0.75))
        table_b = base * rng.uniform(0.7, 0.85)
    elif table_kind == "laminate":
        base = hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.55, 0.9))
        table_b = base * 0.92
    else:
        base = hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.35), rng.uniform(0.4, 0.8))
        table_b = hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.8))

    # Distractors printed on the table (paper, mats): flat, so only colour/texture, no depth.
    patches = []
    for _ in range(int(rng.integers(0, 4))):
        u, v = rng.uniform(0.1, 0.9) * width, rng.uniform(0.3, 0.95) * height
        ray = rot @ np.array([(u - k[0, 2]) / f, (v - k[1, 2]) / f, 1.0])
        if ray[2] >= -1e-3:
            continue
        p = cam + ray * (-cam[2] / ray[2])
        half = rng.uniform(0.03, 0.1, size=2)
        if rng.random() < 0.6:  # borrow an object class's hue: colour alone must not suffice
            hue = _class_hue(int(rng.integers(1, num_classes + 1)), num_classes) + rng.uniform(-25, 25)
        else:
            hue = rng.uniform(0, 360)
        colour = hsv(hue, rng.uniform(0.45, 0.9), rng.uniform(0.5, 0.95))
        texture = str(rng.choice(["flat", "lines", "noise"]))
        patches.append((p[:2], half, rng.uniform(0, math.pi), colour, texture))

    return Scene(
        cam=cam,
        rot=rot,
        k=k,
        table_x=table_x,
        table_y=table_y,
        floor_z=floor_z,
        wall_y=wall_y,
        light=light,
        ambient=rng.uniform(0.35, 0.5),
        table_kind=table_kind,
        table_a=base,
        table_b=table_b,
        grain_dir=rng.uniform(-0.3, 0.3),
        patches=patches,
        floor_colour=hsv(rng.uniform(0, 60), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.6)),
        wall_colour=hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.6, 0.9)),
    )


def _sample_appearance(rng: np.random.Generator, label: int, num_classes: int, texture: str) -> Appearance:
    hue = _class_hue(label, num_classes) + rng.uniform(-22, 22)
    a = hsv(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    choice = rng.random()
    if choice < 0.4:
        b = hsv(0, 0, rng.uniform(0.85, 1.0))  # white-ish
    elif choice < 0.7:
        b = a * rng.uniform(0.3, 0.55)  # darker shade
    else:
        b = hsv(hue + rng.uniform(-40, 40), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.9))
    period, phase, gloss = rng.uniform(0.012, 0.03), rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.6)
    return Appearance(a, b, texture, period, phase, gloss)


def sample_object(
    rng: np.random.Generator, label: int, num_classes: int, xy: np.ndarray, scale: float,
    styles: Sequence[tuple[str, str]],
) -> SceneObject:
    """An object of class `label` standing at xy on z = 0: its style's shape, sized by `scale`, and a look in the
    class's hue."""
    shape, texture = styles[(label - 1) % len(styles)]
    look = _sample_appearance(rng, label, num_classes, texture)
    parts: list[Primitive]
    if shape in ("mug", "can", "bottle"):  # mug: cylinder + handle; can: cylinder; bottle: cylinder + round top
        r = rng.uniform(0.035, 0.05) * scale
        h = rng.uniform(0.07, 0.12) * scale
        yaw = rng.uniform(0, 2 * math.pi)
        parts = [Cylinder(xy[0], xy[1], r, h)]
        foot = r
        if shape == "mug":
            hd = np.array([math.cos(yaw), math.sin(yaw)])
            hc = xy + hd * (r + 0.012 * scale)
            handle_half = np.array([0.014 * scale, 0.006 * scale, 0.3 * h])
            parts.append(Box(np.array([hc[0], hc[1], 0.55 * h]), handle_half, yaw))
            foot = r + 0.03 * scale
        elif shape == "bottle":
            parts[0] = Cylinder(xy[0], xy[1], 0.8 * r, 1.6 * h)
            parts.append(Sphere(np.array([xy[0], xy[1], 1.6 * h]), 0.55 * r))
    elif shape in ("box", "tile", "block"):  # box: any; tile: flat; block: tall
        half = np.array([rng.uniform(0.03, 0.07), rng.uniform(0.03, 0.07), rng.uniform(0.015, 0.075)]) * scale
        if shape == "tile":
            half[2] = rng.uniform(0.004, 0.008) * scale
        elif shape == "block":
            half[:2] *= 0.6
            half[2] = rng.uniform(0.06, 0.09) * scale
        parts = [Box(np.array([xy[0], xy[1], half[2]]), half, rng.uniform(0, math.pi))]
        foot = float(np.hypot(half[0], half[1]))
    elif shape == "ring":
        r = rng.uniform(0.04, 0.065) * scale
        parts = [Ring(xy[0], xy[1], r, r * rng.uniform(0.55, 0.7), rng.uniform(0.015, 0.035) * scale)]
        foot = r
    elif shape == "ball":
        r = rng.uniform(0.03, 0.065) * scale
        parts = [Sphere(np.array([xy[0], xy[1], r]), r)]
        foot = r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return SceneObject(label, parts, look, foot)


def place_objects(
    rng: np.random.Generator,
    scene: Scene,
    labels: list[int],
    height: int,
    width: int,
    num_classes: int,
    scale: float,
    styles: Sequence[tuple[str, str]],
) -> list[SceneObject]:
    """Objects of `labels` standing on the table in view, apart from each other; one that finds no free
    place in 30 tries is left out."""
    f, cx, cy = scene.k[0, 0], scene.k[0, 2], scene.k[1, 2]
    objects: list[SceneObject] = []
    for label in labels:
        for _ in range(30):
            u, v = rng.uniform(0.15, 0.85) * width, rng.uniform(0.3, 0.88) * height
            ray = scene.rot @ np.array([(u - cx) / f, (v - cy) / f, 1.0])
            if ray[2] >= -1e-3:
                continue
            p = scene.cam + ray * (-scene.cam[2] / ray[2])
            obj = sample_object(rng, label, num_classes, p[:2], scale, styles)
            margin = obj.footprint_m + 0.01
            on_table = (
                scene.table_x[0] + margin < p[0] < scene.table_x[1] - margin
                and p[1] < scene.table_y[1] - margin
            )
            if not on_table:
                continue
            free = all(
                np.hypot(*(p[:2] - o.parts[0].bound()[0][:2])) > obj.footprint_m + o.footprint_m + 0.01
                for o in objects
            )
            if free:
                objects.append(obj)
                break
    return objects
