"""Our zero-copy image codec is a drop-in for cv_bridge: the same arrays and messages, bit for bit.

deal_ros decodes images itself (cv_bridge is tied to the ROS distribution's numpy; pitfalls.md 3);
where cv_bridge is installed this checks every supported encoding both ways, with row padding and
big-endian data too.
"""

from __future__ import annotations

import numpy as np
import pytest

cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge not found: source a ROS 2 (Humble/Jazzy) setup.bash")
from sensor_msgs.msg import Image  # noqa: E402

from deal_ros.io.encodings import ENCODINGS  # noqa: E402
from deal_ros.io.image_codec import decode_image, image_fields  # noqa: E402

pytestmark = pytest.mark.ros

H, W = 7, 5
BRIDGE = cv_bridge.CvBridge()
COLOUR_TO_RGB = {"bgr8", "rgba8", "bgra8"}
"""decode_image gives RGB for these: compare with cv_bridge asked for rgb8."""


def _array(encoding: str, rng: np.random.Generator) -> np.ndarray:
    spec = ENCODINGS[encoding]
    shape = (H, W) if spec.channels == 1 else (H, W, spec.channels)
    if spec.dtype == "f4":
        return rng.uniform(0.1, 9.0, shape).astype(np.float32)
    dtype = np.dtype(spec.dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def _message(array: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image of `array`, rows padded by `pad` bytes, optionally big-endian."""
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<"))
    rows = data.reshape(H, -1).view(np.uint8)
    padded = np.zeros((H, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=H, width=W, encoding=encoding, is_bigendian=int(big_endian), step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


def _bridge_decoded(msg: Image) -> np.ndarray:
    return BRIDGE.imgmsg_to_cv2(msg, "rgb8" if msg.encoding in COLOUR_TO_RGB else "passthrough")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_decoding_matches_cv_bridge(encoding):
    rng = np.random.default_rng(len(encoding))
    array = _array(encoding, rng)
    pixel_bytes = array.itemsize * ENCODINGS[encoding].channels
    # padding by whole pixels: cv_bridge mis-slices rows whose step is not a multiple of the pixel size
    # (ours does not: test/io/test_image_codec.py)
    cases = [(0, False), (3 * pixel_bytes, False)] + ([(0, True)] if array.dtype.itemsize > 1 else [])
    for pad, big_endian in cases:
        msg = _message(array, encoding, pad, big_endian)
        ours, theirs = decode_image(msg), _bridge_decoded(msg)
        assert ours.shape == theirs.shape and ours.dtype.newbyteorder("=") == theirs.dtype.newbyteorder("=")
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{encoding}, pad {pad}, big-endian {big_endian}")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_encoding_matches_cv_bridge(encoding):
    array = _array(encoding, np.random.default_rng(1))
    ours, theirs = image_fields(array, encoding), BRIDGE.cv2_to_imgmsg(array, encoding)
    assert (ours["height"], ours["width"], ours["encoding"], ours["step"]) == \
        (theirs.height, theirs.width, theirs.encoding, theirs.step)
    assert ours["is_bigendian"] == theirs.is_bigendian
    assert bytes(ours["data"]) == bytes(theirs.data)
