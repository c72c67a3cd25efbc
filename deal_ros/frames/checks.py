"""Checks for input data that would train nothing, applied where data enters (bag reader, trainer).

A depth image without one valid pixel (all 0 = no measurement, NaN or inf) or with the same value
everywhere (e.g. a saturated 65535 mm) has no depth edges: DEAL is exactly 0 on it and training
learns nothing from depth, without any error. Such frames are refused with a reason that says so.
Depth whose median is beyond MAX_MEDIAN_M cannot be metres (millimetres published as 32FC1 float):
it is refused too, naming the likely unit and the setting that converts it (depth.float_unit).
"""

from __future__ import annotations

import numpy as np

from deal_ros.errors import DegenerateDataError, FrameError, UserError

__all__ = ["CONSTANT_DEPTH", "DEPTH_NOT_METRES", "MAX_MEDIAN_M", "NO_VALID_DEPTH", "check_depth", "check_same_size",
           "depth_problem"]

NO_VALID_DEPTH = "depth_no_valid"
CONSTANT_DEPTH = "depth_constant"
DEPTH_NOT_METRES = "depth_not_metres"
MAX_MEDIAN_M = 100.0
"""A depth image whose median valid value is beyond this is not in metres: no RGB-D camera sees a scene
whose middle is 100 m away, while millimetres put a desk at 500-2000."""
MEDIAN_SAMPLE_STRIDE = 16
"""The median is taken over every 16th valid pixel (a few ms less per frame, the same verdict)."""


def depth_problem(depth_m: np.ndarray, where: str = "depth") -> DegenerateDataError | None:
    """Why depth_m (H, W) metres cannot train anything, or None: no finite pixel > 0, one value everywhere, or
    values that cannot be metres (a median beyond MAX_MEDIAN_M)."""
    depth = np.asarray(depth_m)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        finite = depth[np.isfinite(depth)]
        same = finite.size and bool(np.all(finite == finite.flat[0]))
        seen = f"all {float(finite.flat[0]):g}" if same else "no finite value > 0"
        return DegenerateDataError(f"{where}: no valid depth pixel ({seen}; 0, NaN and inf mean no measurement)",
                                   NO_VALID_DEPTH)
    values = depth[valid]
    low, high = float(values.min()), float(values.max())
    if low == high:
        return DegenerateDataError(f"{where}: depth is {low:g} m at every valid pixel (saturated or a fill value): "
                                   "no depth edges to learn from", CONSTANT_DEPTH)
    median = float(np.median(values[::MEDIAN_SAMPLE_STRIDE]))
    if median > MAX_MEDIAN_M:
        return DegenerateDataError(
            f"{where}: median depth {median:.4g} cannot be metres (likely millimetres, {median / 1000:.3g} m); for "
            "float (32FC1) depth in millimetres set depth.float_unit=mm, or publish metres", DEPTH_NOT_METRES)
    return None


def check_depth(depth_m: np.ndarray, where: str = "depth") -> None:
    """Raise the DegenerateDataError of depth_problem, if any."""
    problem = depth_problem(depth_m, where)
    if problem is not None:
        raise problem


def check_rgb(rgb: np.ndarray) -> None:
    """Refuse (FrameError) anything but an (H, W, 3) uint8 RGB frame."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")


def check_same_size(where: str, first_role: str, first: np.ndarray, second_role: str, second: np.ndarray) -> None:
    """Refuse (UserError) two images of different height or width: a label mask is compared pixel by pixel
    and never stretched onto another size (of another aspect every label would land on the wrong pixel)."""
    if first.shape[:2] != second.shape[:2]:
        raise UserError(f"{where}: {first_role} is {first.shape[1]}x{first.shape[0]} but {second_role} is "
                        f"{second.shape[1]}x{second.shape[0]} (width x height)")
