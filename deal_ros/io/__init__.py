"""Message I/O without rclpy: image codecs, offline time sync, bag reading, tags.

Importing this package does not import rosbags; ``deal_ros.io.bag`` does.
"""

from __future__ import annotations

from deal_ros.io.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_depth_m,
    decode_image,
    decode_rgb,
    image_fields,
)

__all__ = [
    "ImageDecodeError",
    "decode_compressed_image",
    "decode_depth_m",
    "decode_image",
    "decode_rgb",
    "image_fields",
]
