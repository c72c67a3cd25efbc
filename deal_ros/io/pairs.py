"""Checks of an RGB-D pair before it is used: sizes, frame ids, encodings -> units.

The nodes check each synchronised pair here, and the bag reader (deal_ros.io.bag.frames) checks the
pairs of a bag here too, so that a bag the node refuses is refused offline with the same words. The
first pair is checked in full and logged; later pairs only when their layout (the
"signature") changes, so the per-frame cost is a tuple comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deal_ros.io.encodings import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    DEPTH_UNIT_NAMES,
    RGB_INPUT_ENCODINGS,
    is_compressed,
)


def image_signature(msg: Any) -> tuple:
    """What must stay constant between frames: encoding (or format), size and frame id."""
    frame_id = str(msg.header.frame_id)
    if is_compressed(msg):
        return ("compressed", str(msg.format), frame_id)
    return (str(msg.encoding), int(msg.width), int(msg.height), frame_id)


def size_mismatch(rgb_size: tuple[int, int], depth_size: tuple[int, int]) -> str:
    """Why colour and depth of (width, height) `rgb_size` and `depth_size` cannot pair, or '' when they can:
    depth is never resized onto colour (its edges would not line up with the objects')."""
    if rgb_size == depth_size:
        return ""
    swapped = rgb_size == depth_size[::-1]
    return (f"rgb is {rgb_size[0]}x{rgb_size[1]} but depth is {depth_size[0]}x{depth_size[1]}"
            + (" (width and height swapped?)" if swapped else "")
            + ": depth must be aligned to colour (e.g. realsense2_camera align_depth.enable:=true and "
            "the aligned_depth_to_color topic)")


@dataclass
class PairCheck:
    """Result of checking one RGB-D pair: errors make the pair unusable, warnings are logged once."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def check_pair(rgb: Any, depth: Any, camera_info: Any | None = None) -> PairCheck:
    """Full check of a (rgb, depth[, camera_info]) message triple; says what to fix."""
    check = PairCheck()
    rgb_compressed, depth_compressed = is_compressed(rgb), is_compressed(depth)
    rgb_enc = str(rgb.format) if rgb_compressed else str(rgb.encoding)
    depth_enc = str(depth.format) if depth_compressed else str(depth.encoding)
    if not rgb_compressed and rgb_enc in DEPTH_ENCODINGS and not depth_compressed and depth_enc in COLOR_ENCODINGS:
        check.errors.append(f"rgb has encoding {rgb_enc} and depth {depth_enc}: the RGB and depth topics are swapped")
        return check
    if not rgb_compressed and rgb_enc not in RGB_INPUT_ENCODINGS:
        check.errors.append(f"rgb encoding {rgb_enc!r} is not a colour encoding (need {', '.join(COLOR_ENCODINGS)})")
    if not depth_compressed and depth_enc not in DEPTH_ENCODINGS:
        check.errors.append(f"depth encoding {depth_enc!r} is not a depth encoding (need 16UC1 = mm or 32FC1 = m)")
    if not (rgb_compressed or depth_compressed):
        mismatch = size_mismatch((int(rgb.width), int(rgb.height)), (int(depth.width), int(depth.height)))
        if mismatch:
            check.errors.append(mismatch)
    rgb_frame, depth_frame = str(rgb.header.frame_id), str(depth.header.frame_id)
    if rgb_frame != depth_frame:
        check.warnings.append(
            f"rgb frame_id '{rgb_frame}' != depth frame_id '{depth_frame}': is the depth really aligned to colour? "
            "(aligned depth normally carries the colour optical frame)")
    if camera_info is not None and not rgb_compressed:
        info_size = (int(camera_info.width), int(camera_info.height))
        if info_size != (int(rgb.width), int(rgb.height)) and info_size != (0, 0):
            check.warnings.append(f"camera_info is {info_size[0]}x{info_size[1]} but rgb is "
                                  f"{int(rgb.width)}x{int(rgb.height)}: intrinsics are rescaled for the point cloud")
    units = DEPTH_UNIT_NAMES.get(depth_enc, "from the compressed header")
    size = "" if rgb_compressed else f"{int(rgb.width)}x{int(rgb.height)} "
    check.info = f"RGB-D input: {size}rgb {rgb_enc}, depth {depth_enc} ({units}), frame '{rgb_frame}'"
    return check


class PairValidator:
    """Caches the last good signature so that only the first pair and layout changes are fully checked."""

    def __init__(self) -> None:
        self._good: tuple | None = None
        self.rejected = 0

    def check(self, rgb: Any, depth: Any, camera_info: Any | None = None) -> PairCheck | None:
        """None when the layout is unchanged and was fine; otherwise the full PairCheck (log it)."""
        signature = (image_signature(rgb), image_signature(depth))
        if signature == self._good:
            return None
        result = check_pair(rgb, depth, camera_info)
        if result.ok:
            self._good = signature
        else:
            self.rejected += 1
        return result
