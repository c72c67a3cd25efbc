"""Frames with ground-truth class masks, from a folder (rgb/, depth/, gt/) or a bag (+ a folder of masks).

What `deal-ros train --val-bag`, `deal-ros bench quality` and `deal-ros ablate` score against. Each frame is
fitted to the network's input size; its tags are the classes its ground truth holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deal_ros.config import IGNORE_INDEX
from deal_ros.errors import UserError
from deal_ros.frames.buffer import resize_frame
from deal_ros.frames.checks import check_same_size
from deal_ros.io.image_codec import raw_depth_to_metres

LOG = logging.getLogger("deal_ros.io.ground_truth")


@dataclass
class GroundTruthFrame:
    """A labelled RGB-D frame (deal_ros.labels.evaluation.LabelledFrame)."""

    rgb: np.ndarray
    depth_m: np.ndarray
    gt_mask: np.ndarray
    tags: list[str] = field(default_factory=list)


def _tags(gt: np.ndarray, classes: list[str], min_fraction: float = 0.001) -> list[str]:
    counts = np.bincount(gt.ravel(), minlength=len(classes) + 1)
    return [c for k, c in enumerate(classes, start=1) if counts[k] >= max(1, min_fraction * gt.size)]


def _fit(rgb: np.ndarray, depth_m: np.ndarray, gt_path: Path, size: tuple[int, int],
         classes: list[str]) -> GroundTruthFrame:
    """The frame at the network's input `size`; its ground truth must be at the frame's own size."""
    height, width = size
    gt = read_gt_mask(gt_path)
    check_same_size(str(gt_path), "ground truth", gt, "its frame", rgb)
    if rgb.shape[:2] != (height, width):
        rgb, depth_m = resize_frame(rgb, depth_m, size)
        gt = cv2.resize(gt, (width, height), interpolation=cv2.INTER_NEAREST)
    if int(gt[gt != IGNORE_INDEX].max(initial=0)) > len(classes):
        raise UserError(f"ground truth holds class id {int(gt.max())} but only {len(classes)} classes are known")
    return GroundTruthFrame(rgb, depth_m.astype(np.float32), gt, _tags(gt, classes))


def _read_depth(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return raw_depth_to_metres(np.load(path), "32FC1")
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if raw is None:
        raise UserError(f"cannot read depth {path}")
    return raw_depth_to_metres(raw, "16UC1" if raw.dtype == np.uint16 else "32FC1")


def read_gt_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class ids of a ground-truth PNG."""
    gt = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gt is None:
        raise UserError(f"cannot read ground truth {path}")
    return gt


def load_folder(folder: str | Path, size: tuple[int, int], classes: list[str]) -> list[GroundTruthFrame]:
    """rgb/NAME.(png|jpg), depth/NAME.(png|npy), gt/NAME.png -> frames, sorted by name."""
    root = Path(folder)
    for sub in ("rgb", "depth", "gt"):
        if not (root / sub).is_dir():
            raise UserError(f"{root} needs rgb/, depth/ and gt/ subfolders ({sub}/ is missing)")
    frames = []
    for rgb_path in sorted(p for p in (root / "rgb").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        depth_path = next((p for p in (root / "depth" / f"{rgb_path.stem}{e}" for e in (".png", ".npy"))
                           if p.exists()), None)
        gt_path = root / "gt" / f"{rgb_path.stem}.png"
        if depth_path is None or not gt_path.exists():
            LOG.warning("%s: no matching depth or gt, skipped", rgb_path.name)
            continue
        bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
        frames.append(_fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), _read_depth(depth_path), gt_path,
                           size, classes))
    return frames


def load_bag(bag: str, gt_dir: str, size: tuple[int, int], classes: list[str], limit: int,
             depth_float_unit: str = "m") -> list[GroundTruthFrame]:
    """Frames of a bag that have a ground-truth mask (gt_dir/<index:06d>.png or gt_dir/<stamp_ns>.png);
    32FC1 depth in `depth_float_unit` (the setting depth.float_unit)."""
    from deal_ros.io.bag import iter_rgbd_frames

    gt_root = Path(gt_dir)
    if not gt_root.is_dir():
        raise UserError(f"--gt-dir {gt_dir} is not a folder")
    frames = []
    for frame in iter_rgbd_frames(bag, require_tags=False, depth_float_unit=depth_float_unit):
        gt_path = gt_mask_path(gt_root, frame.index, frame.stamp_ns)
        if gt_path is None:
            continue
        frames.append(_fit(np.array(frame.rgb), np.array(frame.depth_m), gt_path, size, classes))
        if len(frames) >= limit:
            break
    return frames


def gt_mask_path(gt_root: Path, index: int, stamp_ns: int) -> Path | None:
    """The ground truth of a bag's frame: gt_root/<index:06d>.png (its number among the frames read, 0-based) or
    gt_root/<stamp_ns>.png (its colour stamp); None when neither exists."""
    return next((p for p in (gt_root / f"{index:06d}.png", gt_root / f"{stamp_ns}.png") if p.exists()), None)


def match_gt_folder(gt_dir: str | Path, frames: list[tuple[int, int]], what: str) -> dict[int, Path]:
    """frame index -> its ground-truth PNG, for the (index, stamp_ns) of every frame of `what` (a bag); refuses
    (UserError) a folder that is missing, holds no PNG, or holds a PNG that names no frame (another bag's)."""
    root = Path(gt_dir)
    if not root.is_dir():
        raise UserError(f"ground-truth folder {gt_dir} is not a folder")
    names = {p.name for p in root.glob("*.png")}
    if not names:
        raise UserError(f"ground-truth folder {gt_dir} holds no PNG mask (<frame index:06d>.png or <stamp_ns>.png)")
    found: dict[int, Path] = {}
    for index, stamp_ns in frames:
        path = gt_mask_path(root, index, stamp_ns)
        if path is not None:
            found[index] = path
    unmatched = sorted(names - {p.name for p in found.values()})
    if unmatched:
        raise UserError(f"{len(unmatched)} of the {len(names)} masks in {gt_dir} name no frame of {what} "
                        f"({len(frames)} frames; e.g. {unmatched[0]}): masks are <frame index:06d>.png or "
                        "<colour stamp ns>.png of the frames read")
    return found
