from __future__ import annotations

import torch

from deal_ros.config import AugmentConfig
from deal_ros.frames.augment import augment_batch


def test_geometry_is_shared_and_values_are_not_blended(device: torch.device) -> None:
    # One square object: label 1, depth 0.5 m, red; elsewhere label 0, depth 2 m, black; a hole column.
    rgb = torch.zeros(4, 3, 48, 64, device=device)
    depth = torch.full((4, 1, 48, 64), 2.0, device=device)
    labels = torch.zeros(4, 48, 64, dtype=torch.long, device=device)
    rgb[:, 0, 10:30, 20:40] = 255
    depth[:, :, 10:30, 20:40] = 0.5
    labels[:, 10:30, 20:40] = 1
    depth[..., 5] = 0.0
    cfg = AugmentConfig(scale_min=0.7, scale_max=1.4, color_jitter=0.0)
    out_rgb, out_depth, out_labels = augment_batch(rgb, depth, cfg, torch.Generator().manual_seed(0), labels)
    assert out_rgb.shape == rgb.shape and out_depth.shape == depth.shape and out_labels.shape == labels.shape
    assert set(out_depth.unique().tolist()) <= {0.0, 0.5, 2.0}, "depth resampled with nearest only"
    assert set(out_labels.unique().tolist()) <= {0, 1, 255}
    obj = out_labels == 1
    assert (out_depth[:, 0][obj] == 0.5).all(), "labels and depth stay aligned"
    assert (out_rgb[:, 0][obj] > 100).float().mean() > 0.97, "labels and RGB stay aligned"
    assert (out_depth[:, 0][out_labels == 255] == 0).all(), "padding is a hole in depth and ignore in labels"


def test_same_seed_same_augmentation() -> None:
    rgb = torch.rand(2, 3, 32, 32) * 255
    depth = torch.rand(2, 1, 32, 32) + 0.5
    a = augment_batch(rgb, depth, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(rgb, depth, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] is None
