"""Message I/O without rclpy: the image codec, offline time sync, bag reading and writing (``deal_ros.io.bag``).

Importing this package imports neither rosbags (``deal_ros.io.bag`` imports it when a bag is opened
or written) nor the image codec (cv2, and torch through deal_ros.depth.maps) until one of them is used,
so that a command refuses a bad option in a fraction of a second.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ImageDecodeError",
    "decode_compressed_image",
    "decode_depth_m",
    "decode_image",
    "decode_rgb",
    "image_fields",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deal_ros.io import image_codec

        return getattr(image_codec, name)
    raise AttributeError(f"module 'deal_ros.io' has no attribute {name!r}")
