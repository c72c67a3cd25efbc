"""Procedural RGB-D tabletop scenes with ground truth, for the demo, tests and benchmarks.

Why this exists: DEAL lives or dies by the depth-edge map, and the interesting failure of the
paper's per-image max normalisation only shows on scenes that look like what a robot sees: a
tilted table (depth gradient everywhere), its far edge with a floor or wall metres behind (the
largest jump in view), small objects a few cm tall, and RealSense-like holes exactly on object
boundaries. This package renders such scenes by ray casting real 3-D primitives, so depth, mask
and occlusions are consistent, and needs no downloads. Everything is deterministic per seed and
vectorised with numpy (no per-pixel Python loops).

Conventions: camera frame x right, y down, z forward (optical axis); depth is the z coordinate in
metres; world frame has the table top at z = 0 and +z up.

Modules: primitives (ray-cast solids), scene (sampling camera, room and objects), render (z-buffer of
one frame), families (clutter, bin, shelf and no-plane rooms and placements), shading (colour), sensor (the
depth camera model), frame (the ground-truth record), makers (the public makers; make_family_scenes by name).
"""

from __future__ import annotations

from deal_ros.lab.synthetic.frame import (
    SURFACE_BACKGROUND,
    SURFACE_OBJECT0,
    SURFACE_STRUCTURE,
    SURFACE_TABLE,
    SyntheticFrame,
)
from deal_ros.lab.synthetic.makers import (
    CLOSEUP_CLASSES,
    DEFAULT_CLASSES,
    FAMILIES,
    MIN_IMAGE_SIDE,
    make_closeup_scenes,
    make_family_scenes,
    make_tabletop_scenes,
)

__all__ = [
    "CLOSEUP_CLASSES",
    "DEFAULT_CLASSES",
    "FAMILIES",
    "MIN_IMAGE_SIDE",
    "SURFACE_BACKGROUND",
    "SURFACE_OBJECT0",
    "SURFACE_STRUCTURE",
    "SURFACE_TABLE",
    "SyntheticFrame",
    "make_closeup_scenes",
    "make_family_scenes",
    "make_tabletop_scenes",
]
