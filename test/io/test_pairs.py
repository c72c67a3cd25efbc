"""RGB-D pair validation: sizes, frame ids, encodings -> units."""

from __future__ import annotations

from types import SimpleNamespace as Ns

from deal_ros.io.pairs import PairValidator, check_pair

INPUTS = [("rgb", "/cam/rgb"), ("depth", "/cam/depth")]


def _img(encoding, width=64, height=48, frame="cam_color_optical"):
    return Ns(encoding=encoding, width=width, height=height, header=Ns(frame_id=frame))


def test_check_pair_good_and_units():
    check = check_pair(_img("rgb8"), _img("16UC1"))
    assert check.ok and not check.warnings and "16UC1 (millimetres)" in check.info
    assert "32FC1 (metres)" in check_pair(_img("bgr8"), _img("32FC1")).info


def test_check_pair_errors():
    assert "swapped" in check_pair(_img("16UC1"), _img("rgb8")).errors[0]
    sizes = check_pair(_img("rgb8", 640, 480), _img("16UC1", 480, 640))
    assert not sizes.ok and "width and height swapped" in sizes.errors[0] and "aligned to colour" in sizes.errors[0]
    assert "not a depth encoding" in check_pair(_img("rgb8"), _img("mono8")).errors[0]
    assert "not a colour encoding" in check_pair(_img("32FC1"), _img("32FC1")).errors[0]


def test_check_pair_warnings():
    frames = check_pair(_img("rgb8"), _img("16UC1", frame="depth_optical"))
    assert frames.ok and "frame_id" in frames.warnings[0]
    info = Ns(width=1280, height=960)
    assert "rescaled" in check_pair(_img("rgb8"), _img("16UC1"), info).warnings[0]
    assert not check_pair(_img("rgb8"), _img("16UC1"), Ns(width=64, height=48)).warnings


def test_validator_checks_only_on_layout_change():
    validator = PairValidator()
    assert validator.check(_img("rgb8"), _img("16UC1")).ok
    assert validator.check(_img("rgb8"), _img("16UC1")) is None
    bad = validator.check(_img("rgb8", 32), _img("16UC1"))
    assert not bad.ok and validator.rejected == 1
    assert validator.check(_img("rgb8"), _img("16UC1")) is None
