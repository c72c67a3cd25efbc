"""What one rendered frame is: the ground-truth record and the surface ids it uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SURFACE_BACKGROUND = 0
"""`SyntheticFrame.surface` id of the far background (floor or wall beyond the table)."""
SURFACE_TABLE = 1
"""`SyntheticFrame.surface` id of the table top."""
SURFACE_OBJECT0 = 2
"""`SyntheticFrame.surface` id of the first object instance; instance i has id 2 + i."""
SURFACE_STRUCTURE = 255
"""`SyntheticFrame.surface` id of the structure around the objects that is not an object (tray walls, shelf boards,
a cloth, furniture in the background): background in the ground truth."""


@dataclass
class SyntheticFrame:
    """One rendered RGB-D frame with ground truth.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres, 0.0 = hole (invalid).
    gt_mask: uint8 (H, W), 0 = background (table, floor, wall, structure), k = class k (1-based into the
    class list). tags: names of the classes present in gt_mask (each covers >= ~1 % of the image),
    in class-list order. intrinsics: float64 3x3 pinhole K of both images (depth aligned to colour).
    depth_true_m: float32 (H, W) noise- and hole-free depth, for measurements.
    surface: uint8 (H, W), SURFACE_BACKGROUND / SURFACE_TABLE / SURFACE_OBJECT0 + instance / SURFACE_STRUCTURE.
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
