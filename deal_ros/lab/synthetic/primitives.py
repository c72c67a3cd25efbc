"""Ray-cast primitives (sphere, cylinder, box, ring, heightfield): exact hits give consistent depth, masks and
occlusions.

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
    """Box rotated by yaw (rad) about world z, then by tilt (rad) about its own x axis (a slanted tray wall leans
    towards its local -y for tilt > 0); half extents in metres."""

    def __init__(self, centre: np.ndarray, half: np.ndarray, yaw: float, tilt: float = 0.0) -> None:
        self.c = np.asarray(centre, np.float64)
        self.a = np.asarray(half, np.float64)
        cy, sy = math.cos(yaw), math.sin(yaw)
        # world -> local rotation (rows are the local axes expressed in world coordinates)
        self.rot = np.array([[cy, sy, 0.0], [-sy, cy, 0.0], [0.0, 0.0, 1.0]])
        if tilt:
            ct, st = math.cos(tilt), math.sin(tilt)
            self.rot = np.array([[1.0, 0.0, 0.0], [0.0, ct, st], [0.0, -st, ct]]) @ self.rot

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


class Heightfield(Primitive):
    """An uneven surface z = h(x, y) over a rectangle (a draped cloth): a sum of sine folds of amplitude
    `amplitude` m. Ray cast by marching between the planes z = +-amplitude and refining by bisection."""

    MARCH_STEPS = 48
    """Samples along a ray between the bounding planes (folds are >= 8 cm long, so a fold is never skipped)."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], amplitude: float,
                 waves: np.ndarray) -> None:
        self.x_range, self.y_range, self.amp = x_range, y_range, float(amplitude)
        self.waves = np.asarray(waves, np.float64)
        """(K, 3): wave vector kx, ky (rad/m) and phase of each fold; h is their mean sine times amplitude."""

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = x[..., None] * self.waves[:, 0] + y[..., None] * self.waves[:, 1] + self.waves[:, 2]
        return self.amp * np.sin(arg).mean(-1)

    CHUNK = 8192
    """Rays marched at once (bounds the memory of the march to about 30 MB)."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        return np.concatenate([self._march(o[i:i + self.CHUNK], d[i:i + self.CHUNK])
                               for i in range(0, len(d), self.CHUNK)] or [np.zeros(0)])

    def _march(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_top = (self.amp - o[:, 2]) / d[:, 2]
            t_bot = (-self.amp - o[:, 2]) / d[:, 2]
        t0 = np.clip(np.minimum(t_top, t_bot), EPS_T, None)
        t1 = np.maximum(t_top, t_bot)
        ok = np.isfinite(t1) & (t1 > t0)
        t0, t1 = np.where(ok, t0, 0.0), np.where(ok, t1, 0.0)
        steps = np.linspace(0.0, 1.0, self.MARCH_STEPS)
        ts = t0[:, None] + (t1 - t0)[:, None] * steps[None, :]
        p = o[:, None, :] + ts[..., None] * d[:, None, :]
        above = p[..., 2] - self.height(p[..., 0], p[..., 1]) > 0
        cross = above[:, :-1] & ~above[:, 1:]
        hit = ok & cross.any(1)
        first = cross.argmax(1)
        rows = np.arange(len(d))
        lo, hi = ts[rows, first], ts[rows, np.minimum(first + 1, self.MARCH_STEPS - 1)]
        for _ in range(8):
            mid = 0.5 * (lo + hi)
            q = o + mid[:, None] * d
            up = q[:, 2] - self.height(q[:, 0], q[:, 1]) > 0
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        t = 0.5 * (lo + hi)
        q = o + t[:, None] * d
        inside = ((q[:, 0] >= self.x_range[0]) & (q[:, 0] <= self.x_range[1])
                  & (q[:, 1] >= self.y_range[0]) & (q[:, 1] <= self.y_range[1]))
        return np.where(hit & inside & (t > EPS_T), t, MISS)

    def normal_uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arg = p[:, 0, None] * self.waves[:, 0] + p[:, 1, None] * self.waves[:, 1] + self.waves[:, 2]
        grad = self.amp * (np.cos(arg)[..., None] * self.waves[None, :, :2]).mean(1)
        n = np.concatenate([-grad, np.ones((len(p), 1))], -1)
        return n / np.linalg.norm(n, axis=1, keepdims=True), p[:, 0], p[:, 1]

    def bound(self) -> tuple[np.ndarray, float]:
        cx, cy = sum(self.x_range) / 2, sum(self.y_range) / 2
        half = math.hypot(self.x_range[1] - cx, self.y_range[1] - cy)
        return np.array([cx, cy, 0.0]), math.hypot(half, self.amp)
