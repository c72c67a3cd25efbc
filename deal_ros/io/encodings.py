"""The sensor_msgs/Image encodings deal_ros reads and writes, and the units of depth (REP 118).

Facts only, no numpy or OpenCV: the pair checks of the nodes and the bag inspection use them
before any image is decoded; deal_ros.io.image_codec decodes with them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["COLOR_ENCODINGS", "DEPTH_ENCODINGS", "DEPTH_UNITS_M", "DEPTH_UNIT_NAMES", "ENCODINGS",
           "FLOAT_DEPTH_UNITS_M", "OUTPUT_ENCODINGS", "RGB_INPUT_ENCODINGS", "EncodingSpec", "is_compressed"]


class EncodingSpec(NamedTuple):
    dtype: str
    """numpy base type; the byte order comes from the message's is_bigendian."""
    channels: int


ENCODINGS: dict[str, EncodingSpec] = {
    "rgb8": EncodingSpec("u1", 3),
    "bgr8": EncodingSpec("u1", 3),
    "rgba8": EncodingSpec("u1", 4),
    "bgra8": EncodingSpec("u1", 4),
    "mono8": EncodingSpec("u1", 1),
    "8UC1": EncodingSpec("u1", 1),  # what cv_bridge 'passthrough' writes for mono8
    "mono16": EncodingSpec("u2", 1),
    "16UC1": EncodingSpec("u2", 1),
    "32FC1": EncodingSpec("f4", 1),
}
"""Supported raw encodings: numpy element type and channel count."""

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
RGB_INPUT_ENCODINGS = (*COLOR_ENCODINGS, "mono8", "8UC1")
"""Raw encodings accepted as colour input (mono is replicated to RGB)."""
DEPTH_UNITS_M = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}
"""Metres per raw unit for each depth encoding (16-bit depth is millimetres by ROS convention)."""
FLOAT_DEPTH_UNITS_M = {"m": 1.0, "mm": 0.001}
"""Metres per unit of float (32FC1) depth, by the name of the setting depth.float_unit: REP 118 says metres,
but some drivers publish millimetres as float."""
DEPTH_ENCODINGS = tuple(DEPTH_UNITS_M)
DEPTH_UNIT_NAMES = {encoding: "metres" if m == 1.0 else "millimetres" for encoding, m in DEPTH_UNITS_M.items()}
"""Depth encoding -> its unit in words, for messages."""
OUTPUT_ENCODINGS = {"mask": "mono8", "pseudo_label": "mono8", "confidence": "32FC1", "overlay": "rgb8"}
"""The segmenter's output images -> their encodings: the node publishes them so and `deal-ros label` writes them
so (label images raw mono8, never JPEG: compression corrupts class ids at edges)."""


def is_compressed(msg: Any) -> bool:
    """True for sensor_msgs/CompressedImage-like messages (a ``format`` field, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")
