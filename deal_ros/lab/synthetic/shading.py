"""Colour of the rendered surfaces: textures (wood, cloth, printed distractors, class patterns), Lambert and
Phong shading, and objects' shadows cast on the table."""

from __future__ import annotations

import math

import numpy as np

from deal_ros.lab.synthetic.frame import SURFACE_BACKGROUND, SURFACE_OBJECT0, SURFACE_STRUCTURE, SURFACE_TABLE
from deal_ros.lab.synthetic.scene import Scene, SceneObject


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


def shade_rgb(
    rng: np.random.Generator,
    scene: Scene,
    objects: list[SceneObject],
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

    # Structure (tray walls, shelf boards, cloth, furniture): its part's colour, noise texture, two-sided Lambert.
    sel = surf == SURFACE_STRUCTURE
    if sel.any():
        p = p_all[sel]
        best = np.full(len(p), np.inf)
        col = np.zeros_like(p)
        n = np.zeros_like(p)
        for part, colour in zip(scene.structure, scene.structure_colours, strict=True):
            tp = part.intersect(scene.cam, dirs[sel])
            take = tp < best
            if take.any():
                nn, uu, vv = part.normal_uv(p[take])
                n[take] = nn
                col[take] = colour * (0.8 + 0.4 * _value_noise(grid, uu * 25 + 5.0, vv * 25))[:, None]
                best[take] = tp[take]
        n *= -np.sign((n * dirs[sel]).sum(-1, keepdims=True) + 1e-12)  # the side facing the camera
        rgb[sel] = col * (amb + (1 - amb) * np.clip(n @ light, 0, 1))[:, None]

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
