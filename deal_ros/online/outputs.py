"""Fields of the segmenter's output messages, built without rclpy.

Label images go out as raw mono8 (never JPEG: compression corrupts class ids at edges), with the
input's stamp and frame_id and the array's own height/width (image_fields refuses a dtype or
shape that does not fit the encoding, so width and height cannot be swapped). The semantic point
cloud is a structured numpy array laid out exactly as sensor_msgs_py.point_cloud2.create_cloud
expects for POINT_FIELDS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from deal_ros.config import IGNORE_INDEX
from deal_ros.io.encodings import OUTPUT_ENCODINGS
from deal_ros.io.image_codec import image_fields
from deal_ros.labels.colors import overlay

if TYPE_CHECKING:
    from deal_ros.inference.segmenter import SegmentationResult

# sensor_msgs/PointField datatype constants (REP: INT8=1 UINT8=2 INT16=3 UINT16=4 INT32=5 UINT32=6 FLOAT32=7)
POINTFIELD_UINT32 = 6
POINTFIELD_FLOAT32 = 7

POINT_FIELDS: tuple[tuple[str, int, int, int], ...] = (
    ("x", 0, POINTFIELD_FLOAT32, 1),
    ("y", 4, POINTFIELD_FLOAT32, 1),
    ("z", 8, POINTFIELD_FLOAT32, 1),
    ("label", 12, POINTFIELD_UINT32, 1),
)
"""(name, offset, datatype, count) of the semantic cloud: metres in the camera optical frame, class id."""

POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                        "offsets": [0, 4, 8, 12], "itemsize": 16})
"""The numpy layout create_cloud derives from POINT_FIELDS (16 bytes a point)."""

def output_image_fields(result: SegmentationResult, rgb: np.ndarray | None = None, with_overlay: bool = False,
                        alpha: float = 0.5, with_pseudo_label: bool = True) -> dict[str, dict[str, Any]]:
    """sensor_msgs/Image fields (without header) of each output: mask, confidence, [pseudo_label], [overlay]."""
    if rgb is not None and rgb.shape[:2] != result.mask.shape:
        raise ValueError(f"mask {result.mask.shape} and rgb {rgb.shape[:2]} sizes differ")
    out = {
        "mask": image_fields(result.mask, OUTPUT_ENCODINGS["mask"]),
        "confidence": image_fields(result.confidence, OUTPUT_ENCODINGS["confidence"]),
    }
    if with_pseudo_label and result.pseudo_label is not None:
        out["pseudo_label"] = image_fields(result.pseudo_label, OUTPUT_ENCODINGS["pseudo_label"])
    if with_overlay:
        if rgb is None:
            raise ValueError("the overlay needs the rgb image")
        out["overlay"] = image_fields(overlay(rgb, result.mask, alpha), OUTPUT_ENCODINGS["overlay"])
    return out


def scale_intrinsics(k: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """3x3 K of an image of from_size=(width, height) rescaled to to_size (pinhole, pixel-centre convention)."""
    kk = np.asarray(k, dtype=np.float64).reshape(3, 3).copy()
    if tuple(from_size) == tuple(to_size) or 0 in from_size:
        return kk
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    kk[0, 0] *= sx
    kk[1, 1] *= sy
    kk[0, 2] = (kk[0, 2] + 0.5) * sx - 0.5
    kk[1, 2] = (kk[1, 2] + 0.5) * sy - 0.5
    return kk


def semantic_points(depth_m: np.ndarray, labels: np.ndarray, k: np.ndarray, stride: int = 1,
                    min_m: float = 0.0, max_m: float = np.inf, skip_label: int | None = IGNORE_INDEX,
                    ) -> np.ndarray:
    """Back-project valid depth pixels to (x, y, z, label) points in the camera optical frame.

    depth_m (H, W) metres (0 / NaN / inf / out of [min_m, max_m] = dropped), labels (H, W) uint8
    aligned to it, k the 3x3 intrinsics of that image; every `stride`-th row and column. Vectorised;
    returns a structured array of POINT_DTYPE (pass it to create_cloud with POINT_FIELDS).
    """
    if depth_m.shape != labels.shape:
        raise ValueError(f"depth {depth_m.shape} and labels {labels.shape} sizes differ")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    kk = np.asarray(k, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy = kk[0, 0], kk[1, 1], kk[0, 2], kk[1, 2]
    if fx <= 0 or fy <= 0:
        raise ValueError(f"camera_info K has non-positive focal lengths ({fx}, {fy}): is the camera calibrated?")
    z = depth_m[::stride, ::stride]
    lab = labels[::stride, ::stride]
    valid = np.isfinite(z) & (z > 0) & (z >= min_m) & (z <= max_m)
    if skip_label is not None:
        valid &= lab != skip_label
    rows, cols = np.nonzero(valid)
    zv = z[rows, cols].astype(np.float32, copy=False)
    points = np.empty(zv.shape[0], dtype=POINT_DTYPE)
    u = (cols * stride).astype(np.float32)
    v = (rows * stride).astype(np.float32)
    points["x"] = (u - np.float32(cx)) * zv / np.float32(fx)
    points["y"] = (v - np.float32(cy)) * zv / np.float32(fy)
    points["z"] = zv
    points["label"] = lab[rows, cols]
    return points


def class_map(classes: Sequence[str]) -> list[tuple[int, str]]:
    """(id, name) of every label value: 0 = background, k = classes[k - 1]."""
    return [(0, "background"), *((i + 1, name) for i, name in enumerate(classes))]


def class_map_json(classes: Sequence[str]) -> str:
    """The std_msgs/String fallback of the latched class map (where vision_msgs/LabelInfo is missing)."""
    return json.dumps({"classes": {str(i): name for i, name in class_map(classes)}, "ignore": IGNORE_INDEX})


def mask_info(header: Any, model_step: int, warming_up: bool, published: Sequence[str],
              trusted: bool = False) -> dict[str, Any]:
    """deal/mask_info of one processed frame: the model step its outputs came from, whether they are still
    warming up (not for planners), whether the trainer trusted the masks of those weights (deal_ros.training.trust),
    and which outputs went out with this stamp (match them by stamp)."""
    return {"stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
            "frame_id": str(header.frame_id), "model_step": int(model_step), "warming_up": bool(warming_up),
            "trusted": bool(trusted), "published": list(published)}
