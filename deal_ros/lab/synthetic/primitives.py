"""Ray-cast primitives (sphere, cylinder, box, ring): exact hits give consistent depth, masks and occlusions.

Rays are o + t * d with d not normalised; for camera rays the camera z component of d is 1, so t is the
camera depth.
"""

from __future__ import annotations

import math

import numpy as np

MISS = np.inf
"""Ray parameter of a miss."""
EPS_T = 1e-6
"""Smallest ray parameter that counts as a hit (keeps a ray from hitting the surface it starts on)."""


class Primitive:
    """A solid the renderer ray casts; objects are built of one or more."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter t (N,) of the first hit with t > 0, inf where missed. o: (3,) or (N, 3)."""
        raise NotImplementedError

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit normal (N, 3) and surface coordinates u, v (N,) in metres at hit points p (N, 3)."""
        raise NotImplementedError

    def bound(self) -> tuple[np.ndarray, float]:
        """Bounding sphere (centre (3,), radius m)."""
        raise NotImplementedError


class Sphere(Primitive):
    """Sphere (a ball, a bottle's round top)."""

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
        return np.where((disc >= 0) & (t > EPS_T), t, MISS)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = p - self.c
        n = q / self.r
        u = np.arctan2(q[:, 1], q[:, 0]) * self.r
        return n, u, q[:, 2]

    def bound(self) -> tuple[np.ndarray, float]:
        return self.c, self.r


class Cylinder(Primitive):
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
            side = np.where((disc >= 0) & (ts > EPS_T) & (zs >= 0) & (zs <= self.h), ts, MISS)
            tc = (self.h - oz) / dz
            xc, yc = ox + tc * dx, oy + tc * dy
            cap = np.where((tc > EPS_T) & (xc * xc + yc * yc <= self.r**2), tc, MISS)
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


class Box(Primitive):
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
        return np.where((tmax >= tmin) & (tmin > EPS_T), tmin, MISS)

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


class Ring(Primitive):
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
                candidates.append(np.where((disc >= 0) & (t > EPS_T) & (z >= 0) & (z <= self.h), t, MISS))
            tc = (self.h - oz) / dz
            rc = (ox + tc * dx) ** 2 + (oy + tc * dy) ** 2
            candidates.append(np.where((tc > EPS_T) & (rc <= self.r**2) & (rc >= self.ri**2), tc, MISS))
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
