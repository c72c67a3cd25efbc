"""Output message fields and the semantic point cloud (rclpy-free, CI)."""

from __future__ import annotations

import json
from types import SimpleNamespace as Ns

import numpy as np
import pytest

from deal_ros.inference.segmenter import SegmentationResult
from deal_ros.io.image_codec import decode_image
from deal_ros.online.outputs import (
    POINT_DTYPE,
    POINT_FIELDS,
    class_map,
    class_map_json,
    mask_info,
    output_image_fields,
    scale_intrinsics,
    semantic_points,
)

H, W = 48, 64


def _result(with_pseudo=True):
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 5:30] = 2
    pseudo = np.full((H, W), 255, np.uint8) if with_pseudo else None
    if pseudo is not None:
        pseudo[:5] = 0
    return SegmentationResult(mask=mask, confidence=np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W),
                              pseudo_label=pseudo)


def test_output_fields_encodings_sizes_and_roundtrip():
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    result = _result()
    fields = output_image_fields(result, rgb, with_overlay=True)
    assert {k: v["encoding"] for k, v in fields.items()} == {
        "mask": "mono8", "confidence": "32FC1", "pseudo_label": "mono8", "overlay": "rgb8"}
    for name, f in fields.items():
        assert (f["height"], f["width"]) == (H, W), name  # never swapped
        assert f["is_bigendian"] == 0
        msg = Ns(**{**f, "data": bytes(f["data"])})
        back = decode_image(msg)
        if name == "mask":
            np.testing.assert_array_equal(back, result.mask)  # raw bytes: class ids exact (no JPEG)
        if name == "pseudo_label":
            assert set(np.unique(back)) == {0, 255}
        if name == "confidence":
            np.testing.assert_array_equal(back, result.confidence)
    assert fields["mask"]["step"] == W and fields["confidence"]["step"] == 4 * W and fields["overlay"]["step"] == 3 * W


def test_optional_outputs():
    fields = output_image_fields(_result(with_pseudo=False))
    assert set(fields) == {"mask", "confidence"}
    assert "pseudo_label" not in output_image_fields(_result(), with_pseudo_label=False)
    with pytest.raises(ValueError, match="sizes differ"):
        output_image_fields(_result(), np.zeros((W, H, 3), np.uint8), with_overlay=True)


def test_overlay_matches_a_float_blend():
    from deal_ros.labels.colors import colorize, overlay

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (H, W)).astype(np.uint8)
    fast = overlay(rgb, labels, 0.5)
    reference = np.where((labels > 0)[..., None], rgb * 0.5 + colorize(labels) * 0.5, rgb).astype(np.uint8)
    assert np.abs(fast.astype(int) - reference.astype(int)).max() <= 1
    np.testing.assert_array_equal(fast[labels == 0], rgb[labels == 0])


def test_mask_info_names_the_model_step_per_stamp():
    header = Ns(stamp=Ns(sec=12, nanosec=345), frame_id="cam")
    info = json.loads(json.dumps(mask_info(header, 57, True, ["overlay"])))
    assert info == {"stamp": {"sec": 12, "nanosec": 345}, "frame_id": "cam", "model_step": 57, "warming_up": True,
                    "trusted": False, "published": ["overlay"]}
    assert json.loads(json.dumps(mask_info(header, 300, False, ["mask"], trusted=True)))["trusted"] is True


K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def test_semantic_points_geometry_and_labels():
    depth = np.full((H, W), 2.0, np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    depth[2, 2] = np.inf
    labels = np.zeros((H, W), np.uint8)
    labels[10, 20] = 3
    points = semantic_points(depth, labels, K)
    assert points.dtype == POINT_DTYPE and points.dtype.itemsize == 16
    assert len(points) == H * W - 3
    p = points[(points["label"] == 3)][0]
    assert p["z"] == pytest.approx(2.0)
    assert p["x"] == pytest.approx((20 - 31.5) * 2.0 / 50.0)
    assert p["y"] == pytest.approx((10 - 23.5) * 2.0 / 50.0)
    assert np.isfinite(points["x"]).all()


def test_semantic_points_stride_range_and_ignore():
    depth = np.full((H, W), 1.0, np.float32)
    depth[:, :8] = 20.0
    labels = np.zeros((H, W), np.uint8)
    labels[:4] = 255
    points = semantic_points(depth, labels, K, stride=2, max_m=10.0)
    assert len(points) == (H // 2 - 2) * (W // 2 - 4)
    assert (points["label"] != 255).all()
    assert len(semantic_points(depth, labels, K, skip_label=None, max_m=10.0, stride=2)) == (H // 2) * (W // 2 - 4)
    with pytest.raises(ValueError, match="focal"):
        semantic_points(depth, labels, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="sizes differ"):
        semantic_points(depth, labels[:, :10], K)


def test_point_fields_match_dtype():
    # what sensor_msgs_py.point_cloud2.dtype_from_fields builds from POINT_FIELDS
    types = {7: "<f4", 6: "<u4"}
    names = [n for n, *_ in POINT_FIELDS]
    dtype = np.dtype({"names": names, "formats": [types[d] for _, _, d, _ in POINT_FIELDS],
                      "offsets": [o for _, o, _, _ in POINT_FIELDS], "itemsize": 16})
    assert dtype == POINT_DTYPE


def test_scale_intrinsics():
    k = [600.0, 0, 319.5, 0, 600.0, 239.5, 0, 0, 1]
    half = scale_intrinsics(k, (640, 480), (320, 240))
    assert half[0, 0] == 300.0 and half[0, 2] == pytest.approx(159.5) and half[1, 2] == pytest.approx(119.5)
    np.testing.assert_array_equal(scale_intrinsics(k, (640, 480), (640, 480)), np.reshape(k, (3, 3)))


def test_class_map():
    assert class_map(["mug", "box"]) == [(0, "background"), (1, "mug"), (2, "box")]
    data = json.loads(class_map_json(["mug"]))
    assert data == {"classes": {"0": "background", "1": "mug"}, "ignore": 255}
