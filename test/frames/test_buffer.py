from __future__ import annotations

import numpy as np
import pytest

from deal_ros.config import BufferConfig
from deal_ros.frames.buffer import FrameBuffer


def _frame(rng: np.random.Generator, size=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 3.0, size).astype(np.float32)
    return rgb, depth


def test_stores_at_training_resolution_with_metric_depth_and_holes() -> None:
    buffer = FrameBuffer(BufferConfig(), num_classes=2, size=(24, 32))
    rng = np.random.default_rng(0)
    rgb, depth = _frame(rng)
    depth[:10] = np.nan
    depth[10:12] = 0.0
    buffer.add(rgb, depth, np.array([1, 0]))
    (frame,) = buffer.sample(1, rng)
    assert frame.rgb.shape == (24, 32, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (24, 32)
    assert (frame.depth_m[:5] == 0).all(), "NaN and 0 become holes"
    valid = frame.depth_m[7:] > 0
    assert valid.all() and frame.depth_m[7:].max() <= 3.0


@pytest.mark.parametrize("value_m", [0.0004, 70.0, 812.0])
def test_keeps_depth_that_uint16_millimetres_cannot_hold(value_m: float) -> None:
    """Depth below 0.5 mm or beyond 65.5 m used to become holes in the buffer (train saw no depth, label did)."""
    buffer = FrameBuffer(BufferConfig(), num_classes=1, size=(24, 32))
    rng = np.random.default_rng(3)
    rgb, _ = _frame(rng, (24, 32))
    depth = np.full((24, 32), value_m, np.float32)
    depth[:, 16:] *= 2
    buffer.add(rgb, depth, np.array([1]))
    (frame,) = buffer.sample(1, rng)
    np.testing.assert_array_equal(frame.depth_m, depth)


def test_bounded_by_frames_and_bytes() -> None:
    rng = np.random.default_rng(1)
    buffer = FrameBuffer(BufferConfig(max_frames=5), num_classes=2, size=(24, 32))
    for i in range(12):
        buffer.add(*_frame(rng), np.array([i % 2, 1 - i % 2]))
    assert len(buffer) == 5
    big = FrameBuffer(BufferConfig(max_frames=1000, max_bytes=2**20), num_classes=1, size=(240, 320))
    for _ in range(12):
        big.add(*_frame(rng, (240, 320)), np.array([1]))
    assert big.nbytes <= 2**20
    assert len(big) == 2**20 // (240 * 320 * 7 + 1)


def test_eviction_keeps_rare_classes_and_sampling_is_balanced() -> None:
    rng = np.random.default_rng(2)
    buffer = FrameBuffer(BufferConfig(max_frames=10), num_classes=3, size=(24, 32))
    buffer.add(*_frame(rng), np.array([0, 0, 1]))  # a rare class seen once, early
    for _ in range(30):
        buffer.add(*_frame(rng), np.array([1, 0, 0]))
    for _ in range(3):
        buffer.add(*_frame(rng), np.array([0, 1, 0]))
    counts = buffer.class_counts()
    assert counts[2] == 1, "the rare frame survives a stream of another class"
    draws = buffer.sample(3000, rng)
    share = np.mean([f.tags for f in draws], axis=0)
    assert np.allclose(share, 1 / 3, atol=0.05), share


def test_rejects_bad_frames() -> None:
    buffer = FrameBuffer(BufferConfig(), num_classes=2, size=(24, 32))
    rng = np.random.default_rng(3)
    rgb, depth = _frame(rng)
    with pytest.raises(ValueError, match="uint8"):
        buffer.add(rgb.astype(np.float32), depth, np.array([1, 0]))
    with pytest.raises(ValueError, match="tags"):
        buffer.add(rgb, depth, np.array([1, 0, 0]))
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(1, rng)
