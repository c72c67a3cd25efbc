"""Procedural RGB-D tabletop scenes with ground truth, for the demo, tests and benchmarks.

Why this exists: DEAL lives or dies by the depth-edge map, and the interesting failure of the
paper's per-image max normalisation only shows on scenes that look like what a robot sees: a
tilted table (depth gradient everywhere), its far edge with a floor or wall metres behind (the
largest jump in view), small objects a few cm tall, and RealSense-like holes exactly on object
boundaries. This module renders such scenes by ray casting real 3-D primitives, so depth, mask
and occlusions are consistent, and needs no downloads. Everything is deterministic per seed and
vectorised with numpy (no per-pixel Python loops).

Conventions: camera frame x right, y down, z forward (optical axis); depth is the z coordinate in
metres; world frame has the table top at z = 0 and +z up.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "CLOSEUP_CLASSES",
    "DEFAULT_CLASSES",
    "SURFACE_BACKGROUND",
    "SURFACE_OBJECT0",
    "SURFACE_TABLE",
    "SyntheticFrame",
    "make_closeup_scenes",
    "make_tabletop_scenes",
]

DEFAULT_CLASSES: tuple[str, ...] = ("mug", "box", "ball")
"""Default object classes; class k (1-based) is rendered as shape/texture k-1 modulo 3."""

SURFACE_BACKGROUND = 0
"""`SyntheticFrame.surface` id of the far background (floor or wall beyond the table)."""
SURFACE_TABLE = 1
"""`SyntheticFrame.surface` id of the table top."""
SURFACE_OBJECT0 = 2
"""`SyntheticFrame.surface` id of the first object instance; instance i has id 2 + i."""

CLOSEUP_CLASSES: tuple[str, ...] = ("mug", "box", "ball", "can", "tile", "ring", "bottle", "block")
"""Classes of the close-up preset; class k (1-based) gets shape and texture _CLOSEUP_STYLES[k-1] (modulo 8).
Textured (stripes, checks, spots) and untextured ('plain') objects, flat ones (tile, ring) and tall ones."""

_TABLETOP_STYLES = (("mug", "stripes"), ("box", "checks"), ("ball", "spots"))
_CLOSEUP_STYLES = (("mug", "stripes"), ("box", "checks"), ("ball", "spots"), ("can", "plain"), ("tile", "plain"),
                   ("ring", "stripes"), ("bottle", "spots"), ("block", "plain"))
_BASELINE_M = 0.05
"""Stereo baseline of the simulated depth camera (RealSense D435: 50 mm)."""
_MISS = np.inf


@dataclass
class SyntheticFrame:
    """One rendered RGB-D frame with ground truth.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres, 0.0 = hole (invalid).
    gt_mask: uint8 (H, W), 0 = background (table, floor, wall), k = class k (1-based into the
    class list). tags: names of the classes present in gt_mask (each covers >= ~1 % of the image),
    in class-list order. intrinsics: float64 3x3 pinhole K of both images (depth aligned to colour).
    depth_true_m: float32 (H, W) noise- and hole-free depth, for measurements.
    surface: uint8 (H, W), SURFACE_BACKGROUND / SURFACE_TABLE / SURFACE_OBJECT0 + instance.
    table_edge_visible: whether the table's far edge (table-to-floor/wall jump) is in view.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    gt_mask: np.ndarray
    tags: list[str]
    intrinsics: np.ndarray
    depth_true_m: np.ndarray | None = None
    surface: np.ndarray | None = None
    table_edge_visible: bool = False
    object_classes: list[int] = field(default_factory=list)
    """Class index (1-based) of each object instance, in surface-id order."""


# ----------------------------------------------------------------------------------------------
# Primitives: ray casting with rays o + t * d (d not normalised; t = camera depth for camera rays)


class _Primitive:
    label: int  # class index, 1-based
    instance: int

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter t (N,) of the first hit with t > 0, inf where missed. o: (3,) or (N, 3)."""
        raise NotImplementedError

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit normal (N, 3) and surface coordinates u, v (N,) in metres at hit points p (N, 3)."""
        raise NotImplementedError

    def bound(self) -> tuple[np.ndarray, float]:
        """Bounding sphere (centre (3,), radius m)."""
        raise NotImplementedError


_EPS_T = 1e-6


class _Sphere(_Primitive):
    def __init__(self, centre: np.ndarray, radius: float) -> None:
        self.c = np.asarray(centre, np.float64)
        self.r = float(radius)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.c
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * (oc * d).sum(-1)
        cc = (oc * oc).sum(-1) - self.r**2
        disc = b * b - 4.0 * a * cc
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2.0 * a)
        return np.where((disc >= 0) & (t > _EPS_T), t, _MISS)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = p - self.c
        n = q / self.r
        u = np.arctan2(q[:, 1], q[:, 0]) * self.r
        return n, u, q[:, 2]

    def bound(self) -> tuple[np.ndarray, float]:
        return self.c, self.r


class _Cylinder(_Primitive):
    """Vertical closed cylinder standing on the table (axis along world z, from z=0 to height)."""

    def __init__(self, cx: float, cy: float, radius: float, height: float) -> None:
        self.cx, self.cy, self.r, self.h = float(cx), float(cy), float(radius), float(height)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        ox, oy, oz = o[:, 0] - self.cx, o[:, 1] - self.cy, o[:, 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        cc = ox * ox + oy * oy - self.r**2
        disc = b * b - 4.0 * a * cc
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = (-b - np.sqrt(disc)) / (2.0 * a)
            zs = oz + ts * dz
            side = np.where((disc >= 0) & (ts > _EPS_T) & (zs >= 0) & (zs <= self.h), ts, _MISS)
            tc = (self.h - oz) / dz
            xc, yc = ox + tc * dx, oy + tc * dy
            cap = np.where((tc > _EPS_T) & (xc * xc + yc * yc <= self.r**2), tc, _MISS)
        return np.minimum(side, cap)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qx, qy, z = p[:, 0] - self.cx, p[:, 1] - self.cy, p[:, 2]
        on_cap = (self.h - z) < 1e-6
        n = np.stack([qx / self.r, qy / self.r, np.zeros_like(z)], -1)
        n[on_cap] = (0.0, 0.0, 1.0)
        u = np.where(on_cap, qx, np.arctan2(qy, qx) * self.r)
        v = np.where(on_cap, qy, z)
        return n, u, v

    def bound(self) -> tuple[np.ndarray, float]:
        return np.array([self.cx, self.cy, self.h / 2]), math.hypot(self.r, self.h / 2)


class _Box(_Primitive):
    """Box standing on the table, rotated by yaw (rad) about world z; half extents in metres."""

    def __init__(self, centre: np.ndarray, half: np.ndarray, yaw: float) -> None:
        self.c = np.asarray(centre, np.float64)
        self.a = np.asarray(half, np.float64)
        cy, sy = math.cos(yaw), math.sin(yaw)
        # world -> local rotation (rows are the local axes expressed in world coordinates)
        self.rot = np.array([[cy, sy, 0.0], [-sy, cy, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = (np.atleast_2d(o) - self.c) @ self.rot.T
        dl = d @ self.rot.T
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        inv = 1.0 / dl
        t1 = (-self.a - ol) * inv
        t2 = (self.a - ol) * inv
        tmin = np.minimum(t1, t2).max(-1)
        tmax = np.maximum(t1, t2).min(-1)
        return np.where((tmax >= tmin) & (tmin > _EPS_T), tmin, _MISS)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = (p - self.c) @ self.rot.T
        axis = np.abs(q / self.a).argmax(-1)
        nl = np.zeros_like(q)
        nl[np.arange(len(q)), axis] = np.sign(q[np.arange(len(q)), axis])
        n = nl @ self.rot  # local -> world
        u = np.where(axis == 0, q[:, 1], q[:, 0])
        v = np.where(axis == 2, q[:, 1], q[:, 2])
        return n, u, v

    def bound(self) -> tuple[np.ndarray, float]:
        return self.c, float(np.linalg.norm(self.a))


class _Ring(_Primitive):
    """Vertical hollow cylinder (a ring, a roll of tape) standing on the table: outer radius r_out, inner r_in."""

    def __init__(self, cx: float, cy: float, r_out: float, r_in: float, height: float) -> None:
        self.cx, self.cy, self.r, self.ri, self.h = float(cx), float(cy), float(r_out), float(r_in), float(height)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        ox, oy, oz = o[:, 0] - self.cx, o[:, 1] - self.cy, o[:, 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        with np.errstate(invalid="ignore", divide="ignore"):
            disc_out = b * b - 4.0 * a * (ox * ox + oy * oy - self.r**2)
            t_out = (-b - np.sqrt(disc_out)) / (2.0 * a)  # entering the outer wall
            disc_in = b * b - 4.0 * a * (ox * ox + oy * oy - self.ri**2)
            t_in = (-b + np.sqrt(disc_in)) / (2.0 * a)  # leaving the hole through its wall (seen from above)
            candidates = []
            for t, disc in ((t_out, disc_out), (t_in, disc_in)):
                z = oz + t * dz
                candidates.append(np.where((disc >= 0) & (t > _EPS_T) & (z >= 0) & (z <= self.h), t, _MISS))
            tc = (self.h - oz) / dz
            rc = (ox + tc * dx) ** 2 + (oy + tc * dy) ** 2
            candidates.append(np.where((tc > _EPS_T) & (rc <= self.r**2) & (rc >= self.ri**2), tc, _MISS))
        return np.minimum.reduce(candidates)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qx, qy, z = p[:, 0] - self.cx, p[:, 1] - self.cy, p[:, 2]
        radius = np.hypot(qx, qy).clip(1e-9)
        on_cap = (self.h - z) < 1e-6
        inner = radius < 0.5 * (self.r + self.ri)
        sign = np.where(inner, -1.0, 1.0)
        n = np.stack([sign * qx / radius, sign * qy / radius, np.zeros_like(z)], -1)
        n[on_cap] = (0.0, 0.0, 1.0)
        u = np.arctan2(qy, qx) * self.r
        v = np.where(on_cap, radius, z)
        return n, u, v

    def bound(self) -> tuple[np.ndarray, float]:
        return np.array([self.cx, self.cy, self.h / 2]), math.hypot(self.r, self.h / 2)


@dataclass
class _Appearance:
    colour_a: np.ndarray  # (3,) float RGB in [0, 1]
    colour_b: np.ndarray
    texture: str
    period_m: float
    phase: float
    gloss: float


@dataclass
class _Object:
    label: int
    parts: list[_Primitive]
    look: _Appearance
    footprint_m: float  # radius of the footprint circle on the table


# ----------------------------------------------------------------------------------------------
# Small vectorised helpers


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    s, v = min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v))


def _value_noise(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at continuous lattice coordinates (x, y), wrapping on the grid."""
    mask = grid.shape[0] - 1  # grid side is a power of two
    x, y = x.astype(np.float32), y.astype(np.float32)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i0, j0 = x0.astype(np.int32) & mask, y0.astype(np.int32) & mask
    i1, j1 = (i0 + 1) & mask, (j0 + 1) & mask
    top = grid[j0, i0] * (1 - fx) + grid[j0, i1] * fx
    bot = grid[j1, i0] * (1 - fx) + grid[j1, i1] * fx
    return top * (1 - fy) + bot * fy


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


# ----------------------------------------------------------------------------------------------
# Scene sampling


@dataclass
class _Scene:
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
    edge_visible: bool


def _class_hue(label: int, num_classes: int) -> float:
    return 360.0 * (label - 1) / max(num_classes, 1) + 5.0


def _sample_scene(rng: np.random.Generator, height: int, width: int, num_classes: int,
                  camera_distance_m: tuple[float, float] = (0.5, 1.2)) -> _Scene:
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
    elev = math.radians(rng.uniform(32.0, 62.0))
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
        base = _hsv(rng.uniform(20, 40), rng.uniform(0.35, 0.6), rng.uniform(0.45, 0.75))
        table_b = base * rng.uniform(0.7, 0.85)
    elif table_kind == "laminate":
        base = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.55, 0.9))
        table_b = base * 0.92
    else:
        base = _hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.35), rng.uniform(0.4, 0.8))
        table_b = _hsv(rng.uniform(0, 360), rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.8))

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
        colour = _hsv(hue, rng.uniform(0.45, 0.9), rng.uniform(0.5, 0.95))
        texture = str(rng.choice(["flat", "lines", "noise"]))
        patches.append((p[:2], half, rng.uniform(0, math.pi), colour, texture))

    return _Scene(
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
        floor_colour=_hsv(rng.uniform(0, 60), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.6)),
        wall_colour=_hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.6, 0.9)),
        edge_visible=edge_visible,
    )


def _sample_appearance(rng: np.random.Generator, label: int, num_classes: int, texture: str) -> _Appearance:
    hue = _class_hue(label, num_classes) + rng.uniform(-22, 22)
    a = _hsv(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    choice = rng.random()
    if choice < 0.4:
        b = _hsv(0, 0, rng.uniform(0.85, 1.0))  # white-ish
    elif choice < 0.7:
        b = a * rng.uniform(0.3, 0.55)  # darker shade
    else:
        b = _hsv(hue + rng.uniform(-40, 40), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.9))
    period, phase, gloss = rng.uniform(0.012, 0.03), rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.6)
    return _Appearance(a, b, texture, period, phase, gloss)


def _sample_object(
    rng: np.random.Generator, label: int, num_classes: int, xy: np.ndarray, scale: float,
    styles: Sequence[tuple[str, str]] = _TABLETOP_STYLES,
) -> _Object:
    shape, texture = styles[(label - 1) % len(styles)]
    look = _sample_appearance(rng, label, num_classes, texture)
    parts: list[_Primitive]
    if shape in ("mug", "can", "bottle"):  # mug: cylinder + handle; can: cylinder; bottle: cylinder + round top
        r = rng.uniform(0.035, 0.05) * scale
        h = rng.uniform(0.07, 0.12) * scale
        yaw = rng.uniform(0, 2 * math.pi)
        parts = [_Cylinder(xy[0], xy[1], r, h)]
        foot = r
        if shape == "mug":
            hd = np.array([math.cos(yaw), math.sin(yaw)])
            hc = xy + hd * (r + 0.012 * scale)
            handle_half = np.array([0.014 * scale, 0.006 * scale, 0.3 * h])
            parts.append(_Box(np.array([hc[0], hc[1], 0.55 * h]), handle_half, yaw))
            foot = r + 0.03 * scale
        elif shape == "bottle":
            parts[0] = _Cylinder(xy[0], xy[1], 0.8 * r, 1.6 * h)
            parts.append(_Sphere(np.array([xy[0], xy[1], 1.6 * h]), 0.55 * r))
    elif shape in ("box", "tile", "block"):  # box: any; tile: flat; block: tall
        half = np.array([rng.uniform(0.03, 0.07), rng.uniform(0.03, 0.07), rng.uniform(0.015, 0.075)]) * scale
        if shape == "tile":
            half[2] = rng.uniform(0.004, 0.008) * scale
        elif shape == "block":
            half[:2] *= 0.6
            half[2] = rng.uniform(0.06, 0.09) * scale
        parts = [_Box(np.array([xy[0], xy[1], half[2]]), half, rng.uniform(0, math.pi))]
        foot = float(np.hypot(half[0], half[1]))
    elif shape == "ring":
        r = rng.uniform(0.04, 0.065) * scale
        parts = [_Ring(xy[0], xy[1], r, r * rng.uniform(0.55, 0.7), rng.uniform(0.015, 0.035) * scale)]
        foot = r
    elif shape == "ball":
        r = rng.uniform(0.03, 0.065) * scale
        parts = [_Sphere(np.array([xy[0], xy[1], r]), r)]
        foot = r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    for part in parts:
        part.label = label
    return _Object(label, parts, look, foot)


def _place_objects(
    rng: np.random.Generator,
    scene: _Scene,
    labels: list[int],
    height: int,
    width: int,
    num_classes: int,
    scale: float,
    styles: Sequence[tuple[str, str]] = _TABLETOP_STYLES,
) -> list[_Object]:
    f, cx, cy = scene.k[0, 0], scene.k[0, 2], scene.k[1, 2]
    objects: list[_Object] = []
    for label in labels:
        for _ in range(30):
            u, v = rng.uniform(0.15, 0.85) * width, rng.uniform(0.3, 0.88) * height
            ray = scene.rot @ np.array([(u - cx) / f, (v - cy) / f, 1.0])
            if ray[2] >= -1e-3:
                continue
            p = scene.cam + ray * (-scene.cam[2] / ray[2])
            obj = _sample_object(rng, label, num_classes, p[:2], scale, styles)
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


# ----------------------------------------------------------------------------------------------
# Rendering


def _background_t(scene: _Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Far background: floor (z = floor_z) or wall (y = wall_y), whichever is hit first."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = (scene.floor_z - o[2]) / d[:, 2]
        tw = (scene.wall_y - o[1]) / d[:, 1]
    tf = np.where(tf > 0, tf, _MISS)
    tw = np.where(tw > 0, tw, _MISS)
    is_wall = tw < tf
    t = np.minimum(np.minimum(tf, tw), 6.0)
    return t, is_wall


def _table_t(scene: _Scene, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[..., 2] / d[:, 2]
    p = o + t[:, None] * d
    inside = (
        (t > _EPS_T)
        & (p[:, 0] >= scene.table_x[0])
        & (p[:, 0] <= scene.table_x[1])
        & (p[:, 1] >= scene.table_y[0])
        & (p[:, 1] <= scene.table_y[1])
    )
    return np.where(inside, t, _MISS)


def _pixel_window(scene: _Scene, part: _Primitive, height: int, width: int) -> np.ndarray | None:
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


def _render_room(scene: _Scene, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer of the room without objects: depth t (N,), surface id (N,) uint8, is-wall flag (N,)."""
    t, is_wall = _background_t(scene, scene.cam, dirs)
    surf = np.full(t.shape, SURFACE_BACKGROUND, np.uint8)
    t_tab = _table_t(scene, scene.cam, dirs)
    closer = t_tab < t
    t[closer], surf[closer] = t_tab[closer], SURFACE_TABLE
    return t, surf, is_wall


def _render_geometry(
    room: tuple[np.ndarray, np.ndarray, np.ndarray],
    scene: _Scene,
    objects: list[_Object],
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


def _shade_rgb(
    rng: np.random.Generator,
    scene: _Scene,
    objects: list[_Object],
    dirs: np.ndarray,
    t: np.ndarray,
    surf: np.ndarray,
    is_wall: np.ndarray,
) -> np.ndarray:
    """Linear-ish RGB in [0, 1], (N, 3): textures, Lambert + Phong shading, cast shadows on the table."""
    grid = rng.random((64, 64)).astype(np.float32)
    rgb = np.zeros((len(t), 3), np.float32)
    light, amb = scene.light, scene.ambient
    p_all = scene.cam + t[:, None] * dirs

    # Far background.
    sel = surf == SURFACE_BACKGROUND
    if sel.any():
        p = p_all[sel]
        wall = is_wall[sel]
        n = np.where(wall[:, None], np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
        lam = amb + (1 - amb) * np.clip(n @ light, 0, 1)
        col = np.where(wall[:, None], scene.wall_colour, scene.floor_colour)
        tex = 0.85 + 0.3 * _value_noise(grid, p[:, 0] * 4 + 7.3, np.where(wall, p[:, 2], p[:, 1]) * 4)
        rgb[sel] = col * (lam * tex)[:, None]

    # Table top with grain / cloth texture, printed distractors and cast shadows.
    sel = surf == SURFACE_TABLE
    if sel.any():
        p = p_all[sel]
        x, y = p[:, 0], p[:, 1]
        if scene.table_kind == "wood":
            xr = x * math.cos(scene.grain_dir) + y * math.sin(scene.grain_dir)
            yr = -x * math.sin(scene.grain_dir) + y * math.cos(scene.grain_dir)
            w = 0.5 + 0.5 * np.sin(2 * math.pi * (xr * 40 + 3 * _value_noise(grid, xr * 3, yr * 25)))
        elif scene.table_kind == "laminate":
            w = _value_noise(grid, x * 60, y * 60)
        else:
            w = (np.sin(x * 2 * math.pi / 0.02) * np.sin(y * 2 * math.pi / 0.02) > 0).astype(np.float64) * 0.6
            w += 0.4 * _value_noise(grid, x * 30, y * 30)
        col = scene.table_a * (1 - w[:, None]) + scene.table_b * w[:, None]
        for centre, half, yaw, pcol, ptex in scene.patches:
            c, s = math.cos(yaw), math.sin(yaw)
            lx = (x - centre[0]) * c + (y - centre[1]) * s
            ly = -(x - centre[0]) * s + (y - centre[1]) * c
            inside = (np.abs(lx) < half[0]) & (np.abs(ly) < half[1])
            if not inside.any():
                continue
            if ptex == "lines":
                m = 0.55 + 0.45 * (np.sin(ly[inside] * 2 * math.pi / 0.012) > 0.3)
            elif ptex == "noise":
                m = 0.6 + 0.4 * _value_noise(grid, lx[inside] * 80 + 11, ly[inside] * 80)
            else:
                m = np.ones(int(inside.sum()))
            col[inside] = pcol * m[:, None]
        lam = np.full(len(p), amb + (1 - amb) * max(light[2], 0.0))
        shadow = np.zeros(len(p), bool)
        reach = 1.0 / max(math.tan(math.asin(min(light[2], 1.0))), 0.1)  # shadow length per metre height
        for obj in objects:
            for part in obj.parts:
                centre, radius = part.bound()
                near = np.hypot(x - centre[0], y - centre[1]) < radius + (centre[2] + radius) * reach + 0.01
                if near.any():
                    hit = part.intersect(p[near] + 1e-5 * light, np.broadcast_to(light, (int(near.sum()), 3)))
                    shadow[near] |= np.isfinite(hit)
        lam[shadow] = amb
        rgb[sel] = col * lam[:, None]

    # Objects: class texture, Lambert + a Phong highlight.
    for i, obj in enumerate(objects):
        sel = surf == SURFACE_OBJECT0 + i
        if not sel.any():
            continue
        p = p_all[sel]
        n = np.zeros_like(p)
        u = np.zeros(len(p))
        v = np.zeros(len(p))
        # Which part owns each pixel: the one whose surface the hit point lies on (smallest t).
        best = np.full(len(p), np.inf)
        for part in obj.parts:
            tp = part.intersect(scene.cam, dirs[sel])
            take = tp < best
            if take.any():
                nn, uu, vv = part.normal_uv(p[take])
                n[take], u[take], v[take] = nn, uu, vv
                best[take] = tp[take]
        look = obj.look
        per = look.period_m
        if look.texture == "stripes":
            w = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * math.pi * v / per + look.phase))
        elif look.texture == "checks":
            w = ((np.floor(u / per) + np.floor(v / per)) % 2).astype(np.float64)
        elif look.texture == "spots":
            w = (_value_noise(grid, u / per * 1.3 + 17.0, v / per * 1.3) > 0.55).astype(np.float64)
        else:  # plain: one colour, only shading and the fine grain below
            w = np.zeros(len(p))
        col = look.colour_a * (1 - w[:, None]) + look.colour_b * w[:, None]
        col = col * (0.92 + 0.16 * _value_noise(grid, u * 200 + 3.0, v * 200))[:, None]
        ndl = np.clip(n @ light, 0, 1)
        view = -dirs[sel] / np.linalg.norm(dirs[sel], axis=1, keepdims=True)
        refl = 2 * ndl[:, None] * n - light
        spec = look.gloss * np.clip((refl * view).sum(-1), 0, 1) ** 40
        rgb[sel] = col * (amb + (1 - amb) * ndl)[:, None] + spec[:, None]
    return rgb


def _depth_sensor(
    rng: np.random.Generator, z: np.ndarray, surf: np.ndarray, f: float, grid: np.ndarray
) -> np.ndarray:
    """RealSense-like depth from true depth z (H, W) metres: noise, quantisation and holes."""
    h, w = z.shape
    cols = np.arange(w, dtype=np.float64)[None, :]
    # Second imager to the right by the baseline: pixel u lands at u - f B / z there. A pixel is
    # occluded (stereo shadow, left of near objects) when a pixel to its right lands left of it.
    x2 = cols - f * _BASELINE_M / z
    right_min = np.minimum.accumulate(x2[:, ::-1], axis=1)[:, ::-1]
    shadow = np.zeros_like(z, bool)
    shadow[:, :-1] = x2[:, :-1] > right_min[:, 1:] + 0.1
    # Left border: outside the second imager's view (the depth FOV is a bit wider: margin).
    band = x2 < -rng.uniform(0.0, 12.0)

    # Edge dropout: short runs of holes on both sides of depth discontinuities.
    zc = np.pad(z, 1, mode="edge")
    jump = np.zeros_like(z)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        jump = np.maximum(jump, np.abs(zc[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] - z))
    edge = (jump > 0.03 * z).astype(np.uint8)
    edge = cv2.dilate(edge, np.ones((3, 3), np.uint8)).astype(bool)
    runs = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    dropout = edge & (runs > rng.uniform(0.55, 0.7))

    # Speckle: isolated invalid pixels, more at range.
    speckle = rng.random(z.shape) < rng.uniform(0.002, 0.006) * np.clip(z, 0.5, 5.0) ** 2

    # A few larger blobs (specular reflections, dark/absorbing spots), often on objects.
    blobs = np.zeros(z.shape, np.uint8)
    obj_pix = np.argwhere(surf >= SURFACE_OBJECT0)
    for _ in range(int(rng.integers(0, 3))):
        if len(obj_pix) and rng.random() < 0.6:
            cy, cx = obj_pix[rng.integers(len(obj_pix))]
        else:
            cy, cx = rng.integers(0, h), rng.integers(0, w)
        axes = (int(rng.integers(2, 8)), int(rng.integers(2, 6)))
        cv2.ellipse(blobs, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, (1,), -1)

    sigma = rng.uniform(0.004, 0.008) * z**2  # ~1-2 mm at 0.5 m
    noisy = z + sigma * rng.standard_normal(z.shape)
    noisy = np.round(noisy * 1000.0) / 1000.0  # z16 in millimetres
    holes = shadow | band | dropout | speckle | blobs.astype(bool) | (noisy <= 0)
    return np.where(holes, 0.0, noisy).astype(np.float32)


def _render_frame(
    rng: np.random.Generator, labels: list[int], height: int, width: int, num_classes: int,
    camera_distance_m: tuple[float, float] = (0.5, 1.2),
    styles: Sequence[tuple[str, str]] = _TABLETOP_STYLES,
    coverage: tuple[float, float] | None = None,
) -> tuple[_Scene, list[_Object], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a scene and place the objects; with `coverage` (lo, hi), the objects are rescaled until together
    they cover about a fraction U(lo, hi) of the image (the close-up regime)."""
    scene = _sample_scene(rng, height, width, num_classes, camera_distance_m)
    kinv = np.linalg.inv(scene.k)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([jj.ravel(), ii.ravel(), np.ones(height * width)], -1)
    dirs = (pix @ kinv.T) @ scene.rot.T  # camera z component is 1 -> t is the camera depth
    min_px = 0.01 * height * width
    room = _render_room(scene, dirs)
    best: tuple | None = None
    for attempt in range(10):
        scale = 1.0 if attempt < 5 else 1.3
        objects = _place_objects(rng, scene, labels, height, width, num_classes, scale, styles)
        t, surf, is_wall = _render_geometry(room, scene, objects, dirs, height, width)
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
        t, surf, is_wall = _render_geometry(room, scene, objects, dirs, height, width)
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
            placed = _place_objects(rng, scene, labels, height, width, num_classes, scale, styles)
            if len(placed) < len(objects):
                continue  # the larger objects no longer fit on the table
            rendered = _render_geometry(room, scene, placed, dirs, height, width)
            new_error = abs(float((rendered[1] >= SURFACE_OBJECT0).mean()) / target - 1.0)
            if new_error < error:  # keep the placement closest to the target coverage
                chosen, error = (placed, *rendered), new_error
        objects, t, surf, is_wall = chosen
    return scene, objects, dirs, t, surf, is_wall


def make_tabletop_scenes(
    num_frames: int,
    height: int = 240,
    width: int = 320,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 0,
    objects_per_frame: tuple[int, int] = (1, 3),
    camera_distance_m: tuple[float, float] = (0.5, 1.2),
) -> list[SyntheticFrame]:
    """Render `num_frames` RGB-D tabletop frames (deterministic per seed; frame i is the same for
    any num_frames > i). Classes are dealt from shuffled decks so each occurs about equally often;
    each frame holds objects_per_frame[0]..[1] objects (the same class may appear twice); the camera is
    camera_distance_m[0]..[1] metres from the table along its optical axis."""
    return _make_scenes(num_frames, height, width, classes, seed, objects_per_frame, camera_distance_m,
                        _TABLETOP_STYLES, None)


def make_closeup_scenes(
    num_frames: int,
    height: int = 240,
    width: int = 320,
    classes: Sequence[str] = CLOSEUP_CLASSES,
    seed: int = 0,
    objects_per_frame: tuple[int, int] = (1, 2),
    coverage: tuple[float, float] = (0.08, 0.35),
) -> list[SyntheticFrame]:
    """Close-up "onboarding" frames: one or two objects that together cover coverage[0]..[1] of the image,
    seen from 0.35-0.6 m, the table's far edge and the floor often in view, stereo shadows on the objects'
    far side. Eight object styles (CLOSEUP_CLASSES; class k uses style k-1 modulo 8), textured and plain.
    Deterministic per seed and prefix-stable like make_tabletop_scenes; use different seeds for training
    and held-out sets."""
    return _make_scenes(num_frames, height, width, classes, seed, objects_per_frame, (0.35, 0.6),
                        _CLOSEUP_STYLES, coverage)


def _make_scenes(
    num_frames: int,
    height: int,
    width: int,
    classes: Sequence[str],
    seed: int,
    objects_per_frame: tuple[int, int],
    camera_distance_m: tuple[float, float],
    styles: Sequence[tuple[str, str]],
    coverage: tuple[float, float] | None,
) -> list[SyntheticFrame]:
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not classes:
        raise ValueError("classes must not be empty")
    if len(classes) > 254:
        raise ValueError("at most 254 classes fit a uint8 mask")
    lo, hi = objects_per_frame
    if not 0 <= lo <= hi:
        raise ValueError(f"objects_per_frame must satisfy 0 <= lo <= hi, got {objects_per_frame}")
    if height < 16 or width < 16:
        raise ValueError(f"image too small: {height}x{width}")
    num_classes = len(classes)
    deck_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    deck: list[int] = []
    frames: list[SyntheticFrame] = []
    for i in range(num_frames):
        n = int(deck_rng.integers(lo, hi + 1))
        labels = []
        for _ in range(n):
            if not deck:
                deck = [int(c) + 1 for c in deck_rng.permutation(num_classes)]
            labels.append(deck.pop())
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i]))
        scene, objects, dirs, t, surf, is_wall = _render_frame(rng, labels, height, width, num_classes,
                                                               camera_distance_m, styles, coverage)

        rgb_lin = _shade_rgb(rng, scene, objects, dirs, t, surf, is_wall)
        rgb = rgb_lin.reshape(height, width, 3).astype(np.float32)
        rgb = np.asarray(cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 0.9)), np.float32)  # float32 already
        rgb = rgb * 255.0 + rng.uniform(1.5, 3.5) * rng.standard_normal(rgb.shape, dtype=np.float32)
        rgb8 = np.clip(np.round(rgb), 0, 255).astype(np.uint8)

        z = t.reshape(height, width)
        surf2 = surf.reshape(height, width)
        grid = rng.random((max(height // 3, 2), max(width // 3, 2))).astype(np.float32)
        depth = _depth_sensor(rng, z, surf2, float(scene.k[0, 0]), grid)

        lut = np.zeros(256, np.uint8)
        for j, obj in enumerate(objects):
            lut[SURFACE_OBJECT0 + j] = obj.label
        gt = lut[surf2]
        present = set(np.unique(gt).tolist()) - {0}
        tags = [classes[c - 1] for c in range(1, num_classes + 1) if c in present]
        frames.append(
            SyntheticFrame(
                rgb=rgb8,
                depth_m=depth,
                gt_mask=gt,
                tags=tags,
                intrinsics=scene.k.copy(),
                depth_true_m=z.astype(np.float32),
                surface=surf2,
                table_edge_visible=bool(
                    ((surf2[:-1] == SURFACE_BACKGROUND) & (surf2[1:] == SURFACE_TABLE)).any()
                ),
                object_classes=[o.label for o in objects],
            )
        )
    return frames
