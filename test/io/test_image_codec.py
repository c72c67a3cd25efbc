"""deal_ros.io.image_codec on rclpy-like (bytes / array.array) and rosbags-like (numpy) messages."""

from __future__ import annotations

import array
import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from deal_ros.io.encodings import ENCODINGS
from deal_ros.io.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_depth_m,
    decode_image,
    decode_rgb,
    image_fields,
    raw_depth_to_metres,
)

H, W = 6, 5
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
MONO16 = RNG.integers(0, 65535, (H, W), dtype=np.uint16)
DEPTH_M = RNG.uniform(0.2, 5.0, (H, W)).astype(np.float32)


def make_msg(
    array_: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False, data_kind: str = "numpy"
):
    """An Image-like namespace with `pad` bytes of row padding and the data container of rclpy or rosbags."""
    a = np.ascontiguousarray(array_)
    if bigendian:
        a = a.astype(a.dtype.newbyteorder(">"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.hstack([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)])
    raw = np.ascontiguousarray(rows).reshape(-1)
    data = {"numpy": raw, "bytes": raw.tobytes(), "array": array.array("B", raw.tobytes())}[data_kind]
    return SimpleNamespace(
        height=a.shape[0],
        width=a.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1],
        data=data,
    )


def buffer_of(msg) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


@pytest.mark.parametrize("data_kind", ["numpy", "bytes", "array"])
def test_rgb8_is_a_zero_copy_view(data_kind):
    msg = make_msg(RGB, "rgb8", data_kind=data_kind)
    out = decode_image(msg, "/rgb")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)
    assert np.shares_memory(out, buffer_of(msg))


@pytest.mark.parametrize("data_kind", ["numpy", "bytes", "array"])
def test_16uc1_and_32fc1_are_zero_copy_views(data_kind):
    msg = make_msg(MONO16, "16UC1", data_kind=data_kind)
    out = decode_image(msg)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    np.testing.assert_array_equal(out, MONO16)
    assert np.shares_memory(out, buffer_of(msg))
    msg = make_msg(DEPTH_M, "32FC1", data_kind=data_kind)
    out = decode_image(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, DEPTH_M)
    assert np.shares_memory(out, buffer_of(msg))


def test_mono_encodings():
    mono8 = RGB[..., 0].copy()
    for enc in ("mono8", "8UC1"):
        out = decode_image(make_msg(mono8, enc))
        assert out.dtype == np.uint8 and out.shape == (H, W)
        np.testing.assert_array_equal(out, mono8)
    out = decode_image(make_msg(MONO16, "mono16"))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, MONO16)


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8"])
def test_colour_encodings_become_rgb(encoding):
    alpha = np.full((H, W, 1), 7, np.uint8)
    raw = {
        "bgr8": RGB[..., ::-1],
        "rgba8": np.concatenate([RGB, alpha], 2),
        "bgra8": np.concatenate([RGB[..., ::-1], alpha], 2),
    }[encoding]
    out = decode_image(make_msg(raw, encoding))
    assert out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)
    np.testing.assert_array_equal(decode_rgb(make_msg(raw, encoding)), RGB)


def test_decode_rgb_replicates_mono8_and_refuses_depth():
    out = decode_rgb(make_msg(RGB[..., 1], "mono8"))
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out[..., 2], RGB[..., 1])
    with pytest.raises(ImageDecodeError, match=r"/d.*16UC1.*swapped"):
        decode_rgb(make_msg(MONO16, "16UC1"), "/d")


@pytest.mark.parametrize(
    "encoding,array_",
    [
        ("rgb8", RGB),
        ("16UC1", MONO16),
        ("32FC1", DEPTH_M),
        ("mono8", RGB[..., 0]),
        ("bgra8", np.dstack([RGB, RGB[..., :1]])),
    ],
)
def test_step_padding(encoding, array_):
    msg = make_msg(array_, encoding, pad=6)
    out = decode_image(msg)
    expected = array_ if encoding != "bgra8" else array_[..., [2, 1, 0]]
    np.testing.assert_array_equal(out, expected)
    if encoding != "bgra8":
        assert np.shares_memory(out, buffer_of(msg))  # still a (strided) view


def test_big_endian_16uc1_and_32fc1():
    out = decode_image(make_msg(MONO16, "16UC1", bigendian=True))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, MONO16)
    out = decode_image(make_msg(DEPTH_M, "32FC1", bigendian=True, pad=4))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, DEPTH_M)
    np.testing.assert_allclose(
        decode_depth_m(make_msg(MONO16, "16UC1", bigendian=True)), MONO16 / 1000.0, rtol=1e-6
    )


def test_is_bigendian_ignored_for_8bit():
    np.testing.assert_array_equal(decode_image(make_msg(RGB, "rgb8", bigendian=True)), RGB)


def test_decode_depth_m_units_and_holes():
    mm = MONO16.copy()
    mm[0, 0] = 0
    out = decode_depth_m(make_msg(mm, "16UC1"))
    assert out.dtype == np.float32 and out.shape == (H, W)
    np.testing.assert_allclose(out, mm.astype(np.float64) / 1000.0, rtol=1e-6)
    assert out[0, 0] == 0.0
    m = DEPTH_M.copy()
    m[0, :4] = [np.nan, np.inf, -1.0, 0.0]
    out = decode_depth_m(make_msg(m, "32FC1"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :4], 0.0)
    np.testing.assert_array_equal(out[1:], DEPTH_M[1:])
    assert not np.shares_memory(out, m)
    with pytest.raises(ImageDecodeError, match=r"/cam.*'rgb8'.*not a depth"):
        decode_depth_m(make_msg(RGB, "rgb8"), "/cam")


def test_unknown_encoding_names_topic_and_encoding():
    msg = make_msg(RGB, "yuv422")
    with pytest.raises(ImageDecodeError, match=r"/camera/x.*'yuv422'.*unsupported"):
        decode_image(msg, "/camera/x")


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"step": W * 3 - 1}, "step"),
        ({"height": H + 1}, "len\\(data\\)"),
        ({"width": W + 1}, "step"),
        ({"height": 0}, "empty"),
    ],
)
def test_inconsistent_fields(change, pattern):
    msg = make_msg(RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageDecodeError, match=pattern) as info:
        decode_image(msg, "/topic/rgb")
    assert "/topic/rgb" in str(info.value) and "rgb8" in str(info.value)


def test_truncated_data():
    msg = make_msg(MONO16, "16UC1", data_kind="bytes")
    msg.data = msg.data[:-2]
    with pytest.raises(ImageDecodeError, match="len\\(data\\)"):
        decode_image(msg, "/depth")


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_image_fields_round_trip(encoding):
    spec = ENCODINGS[encoding]
    dtype = np.dtype(spec.dtype)
    shape = (H, W) if spec.channels == 1 else (H, W, spec.channels)
    src = RNG.integers(0, 200, shape).astype(dtype)
    fields = image_fields(src, encoding)
    assert (fields["height"], fields["width"], fields["is_bigendian"]) == (H, W, 0)
    assert fields["step"] == W * spec.channels * dtype.itemsize
    assert len(fields["data"]) == fields["step"] * H
    out = decode_image(SimpleNamespace(**fields))
    if encoding in ("bgr8", "bgra8"):
        expected = src[..., [2, 1, 0]]
    elif encoding == "rgba8":
        expected = src[..., :3]
    else:
        expected = src
    np.testing.assert_array_equal(out, expected)


def test_image_fields_is_zero_copy_for_contiguous_arrays():
    labels = np.zeros((H, W), np.uint8)
    fields = image_fields(labels, "mono8")
    assert np.shares_memory(np.frombuffer(fields["data"], np.uint8), labels)


@pytest.mark.parametrize(
    "array_,encoding",
    [
        (np.zeros((H, W), np.int64), "mono8"),  # wrong dtype (a label map straight from argmax)
        (np.zeros((H, W, 3), np.uint8), "mono8"),  # wrong shape
        (np.zeros((H, W), np.float64), "32FC1"),  # float64 confidence
        (np.zeros((H, W), np.uint8), "rgb8"),
        (np.zeros((H, W, 4), np.uint8), "rgb8"),
        (np.zeros((H, W), np.uint8), "jpeg"),  # labels must never go out as JPEG
    ],
)
def test_image_fields_refuses_wrong_dtype_or_shape(array_, encoding):
    with pytest.raises(ImageDecodeError, match=encoding):
        image_fields(array_, encoding)


def test_image_fields_keeps_height_and_width():
    labels = np.zeros((3, 7), np.uint8)
    labels[0, 6] = 5
    fields = image_fields(labels, "mono8")
    assert (fields["height"], fields["width"], fields["step"]) == (3, 7, 7)
    assert decode_image(SimpleNamespace(**fields))[0, 6] == 5


def test_image_fields_big_endian_input_is_written_little_endian():
    src = MONO16.astype(">u2")
    fields = image_fields(src, "16UC1")
    np.testing.assert_array_equal(np.frombuffer(fields["data"], "<u2").reshape(H, W), MONO16)


# ---- CompressedImage -----------------------------------------------------------------------


def compressed(data: bytes, fmt: str, kind: str = "numpy"):
    payload = (
        np.frombuffer(data, np.uint8)
        if kind == "numpy"
        else (data if kind == "bytes" else array.array("B", data))
    )
    return SimpleNamespace(format=fmt, data=payload)


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8"])
@pytest.mark.parametrize("kind", ["numpy", "bytes", "array"])
def test_png_colour_round_trip(fmt, kind):
    big = cv2.resize(RGB, (40, 30), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", big[..., ::-1])  # image_transport compresses BGR
    assert ok
    msg = compressed(buf.tobytes(), fmt, kind)
    np.testing.assert_array_equal(decode_compressed_image(msg, "/c"), big)
    np.testing.assert_array_equal(decode_rgb(msg, "/c"), big)


def test_jpeg_colour_and_mono():
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48)[None, :]
    smooth[..., 2] = 90
    ok, buf = cv2.imencode(".jpg", smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_compressed_image(compressed(buf.tobytes(), "rgb8; jpeg compressed bgr8"))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3  # RGB order kept (not BGR)
    ok, buf = cv2.imencode(".jpg", smooth[..., 0])
    msg = compressed(buf.tobytes(), "mono8; jpeg compressed ")
    assert decode_compressed_image(msg).shape == (32, 48)
    assert decode_rgb(msg).shape == (32, 48, 3)


def test_compressed_depth_16uc1_round_trip():
    mm = MONO16.copy()
    mm[1, 1] = 0
    _, png = cv2.imencode(".png", mm)
    data = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
    msg = compressed(data, "16UC1; compressedDepth png")
    out = decode_compressed_image(msg, "/depth/compressedDepth")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, mm)
    depth_m = decode_depth_m(msg)
    np.testing.assert_allclose(depth_m, mm / 1000.0, rtol=1e-6)
    assert depth_m[1, 1] == 0.0
    # older publishers write only "16UC1; compressedDepth"
    np.testing.assert_array_equal(decode_compressed_image(compressed(data, "16UC1; compressedDepth")), mm)


def test_compressed_depth_32fc1_inverse_depth_quantisation():
    # encoder of compressed_depth_image_transport: A = z0 (z0 + 1), B = 1 - A / depth_max,
    # inv = A / z + B (uint16), 0 for z >= depth_max or NaN; decoder: z = A / (inv - B)
    depth_max, z0 = 10.0, 100.0
    quant_a = np.float32(z0 * (z0 + 1.0))
    quant_b = np.float32(1.0 - quant_a / depth_max)
    z = DEPTH_M.copy()
    z[0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        inv = np.where(z < depth_max, quant_a / z + quant_b, 0).astype(np.uint16)
    _, png = cv2.imencode(".png", inv)
    data = struct.pack("<iff", 0, float(quant_a), float(quant_b)) + png.tobytes()
    msg = compressed(data, "32FC1; compressedDepth png")
    out = decode_compressed_image(msg)
    assert out.dtype == np.float32 and np.isnan(out[0, 0])
    np.testing.assert_allclose(out[1:], z[1:], rtol=0.01)  # quantisation error
    depth_m = decode_depth_m(msg)
    assert depth_m[0, 0] == 0.0 and np.all(np.isfinite(depth_m))


@pytest.mark.parametrize(
    "data,fmt,pattern",
    [
        (b"notanimage", "jpeg", "not a valid"),
        (b"", "png", "not a valid"),
        (b"\x00" * 8, "16UC1; compressedDepth png", "too short"),
        (b"\x00" * 40, "16UC1; compressedDepth rvl", "rvl"),
        (b"\x00" * 40, "theora", "unsupported"),
    ],
)
def test_bad_compressed_messages(data, fmt, pattern):
    with pytest.raises(ImageDecodeError, match=pattern) as info:
        decode_compressed_image(compressed(data, fmt), "/cam/compressed")
    assert "/cam/compressed" in str(info.value)


def test_lossy_compressed_is_not_depth():
    _, buf = cv2.imencode(".jpg", RGB)
    with pytest.raises(ImageDecodeError, match="not a depth"):
        decode_depth_m(compressed(buf.tobytes(), "rgb8; jpeg compressed bgr8"), "/d")


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_raw_depth_16bit_is_millimetres(encoding):
    raw = np.array([[0, 1, 850], [1500, 65535, 12000]], dtype=np.uint16)
    depth = raw_depth_to_metres(raw, encoding)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0.0, 0.001, 0.85], [1.5, 65.535, 12.0]], rtol=1e-6)
    assert (depth > 0).tolist() == [[False, True, True], [True, True, True]]


def test_raw_depth_32fc1_is_metres_and_every_hole_is_zero():
    raw = np.array([[0.0, np.nan, np.inf, -np.inf], [-0.5, 0.85, 1.5, 25.0]], dtype=np.float32)
    depth = raw_depth_to_metres(raw, "32FC1")
    assert bool(np.isfinite(depth).all())
    np.testing.assert_array_equal(depth, np.array([[0, 0, 0, 0], [0, 0.85, 1.5, 25.0]], dtype=np.float32))


def test_raw_depth_refuses_bad_input():
    with pytest.raises(ValueError, match="not supported"):
        raw_depth_to_metres(np.zeros((2, 2), np.uint16), "8UC1")
    with pytest.raises(ValueError, match="2-D"):
        raw_depth_to_metres(np.zeros((2, 2, 1), np.uint16), "16UC1")


def test_float_depth_in_millimetres_by_setting():
    """depth.float_unit=mm: 32FC1 millimetres become metres; holes stay 0."""
    raw = np.array([[1500.0, 0.0], [np.nan, 800.0]], np.float32)
    np.testing.assert_allclose(raw_depth_to_metres(raw, "32FC1", "mm"), [[1.5, 0.0], [0.0, 0.8]], rtol=1e-6)
    np.testing.assert_array_equal(raw_depth_to_metres(raw, "32FC1"), [[1500.0, 0.0], [0.0, 800.0]])
